import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { waitFor } from './wait-for.js'

/** The PgBouncer binary, or undefined when it is not installed (Debian's `pgbouncer` package). */
export function findPgBouncer(): string | undefined {
  for (const candidate of ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer', '/usr/local/bin/pgbouncer']) {
    try {
      execFileSync(candidate, ['--version'], { stdio: 'ignore' })
      return candidate
    } catch {}
  }
  try {
    return execFileSync('sh', ['-c', 'command -v pgbouncer'], { encoding: 'utf8' }).trim() || undefined
  } catch {
    return undefined
  }
}

export interface PgBouncer {
  /** `databaseUrl` with its host and port replaced by PgBouncer's. */
  url: string
  port: number
  /** What PgBouncer logged so far. */
  log(): string
  stop(): Promise<void>
}

/**
 * Starts PgBouncer in transaction mode on a free port in front of the server of `databaseUrl`, every
 * database passed through. It refuses to run as root: as root it runs as `nobody`, with its ini and user
 * list in a temporary directory that user can read. Clients are trusted; PgBouncer logs in to the server
 * with the user's password from the URL.
 */
export async function startPgBouncer(binary: string, databaseUrl: string, settings: Record<string, string | number> = {}): Promise<PgBouncer> {
  const target = new URL(databaseUrl)
  const user = decodeURIComponent(target.username || 'postgres')
  const password = decodeURIComponent(target.password)
  const port = await freePort()
  const directory = await mkdtemp(join(tmpdir(), 'outbox-pgbouncer-'))
  await chmod(directory, 0o755)
  const ini = join(directory, 'pgbouncer.ini')
  const config = {
    listen_addr: '127.0.0.1',
    listen_port: port,
    unix_socket_dir: '',
    auth_type: 'trust',
    auth_file: join(directory, 'userlist.txt'),
    pool_mode: 'transaction',
    max_client_conn: 500,
    default_pool_size: 20,
    server_login_retry: 1,
    ...settings,
  }
  const quote = (text: string) => `"${text.replaceAll('"', '""')}"`
  await writeFile(join(directory, 'userlist.txt'), `${quote(user)} ${quote(password)}\n`, { mode: 0o644 })
  const lines = ['[databases]', `* = host=${target.hostname} port=${target.port || 5432}`, '[pgbouncer]', ...Object.entries(config).map(([key, value]) => `${key} = ${value}`)]
  await writeFile(ini, `${lines.join('\n')}\n`, { mode: 0o644 })

  const asRoot = userInfo().uid === 0
  const child: ChildProcess = spawn(binary, [ini], { stdio: ['ignore', 'pipe', 'pipe'], ...(asRoot ? { uid: 65534, gid: 65534 } : {}) })
  let output = ''
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()))
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()))
  let exited = false
  child.once('exit', () => (exited = true))
  await waitFor('PgBouncer listening', () => {
    if (exited) throw new Error(`pgbouncer exited: ${output}`)
    return output.includes('process up')
  }, 15_000)
  const url = new URL(databaseUrl)
  url.hostname = '127.0.0.1'
  url.port = String(port)
  return {
    url: url.toString(),
    port,
    log: () => output,
    async stop() {
      if (!exited) {
        const gone = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGTERM')
        await gone
      }
      await rm(directory, { recursive: true, force: true })
    },
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}
