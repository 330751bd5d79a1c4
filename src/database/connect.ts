import { createConnection } from 'node:net'
import { hostname } from 'node:os'
import postgres, { type Sql } from 'postgres'
import { ConfigError, ConnectionError, errorMessage, isConnectionFailure, SqlState, sqlState } from '../errors.js'
import { exponentialDelayMs } from '../poller/backoff.js'
import { hostList } from './database-url.js'

/** The role a connection plays, shown in pg_stat_activity as `outbox-poller/<host>/<pid>/<role>`. */
export function applicationName(role: string): string {
  return `outbox-poller/${hostname()}/${process.pid}/${role}`.slice(0, 63)
}

export interface ConnectOptions {
  /** Most connections in the pool. */
  max?: number
  /** `application_name` of the connections. */
  applicationName: string
  /** Called when a connection closes (the poller uses it to notice that its batch transaction is gone). */
  onclose?: () => void
  /**
   * The URL reaches PostgreSQL itself, no connection pooler between (see `waitForDatabase`): the server's
   * keepalives are set at startup and queries may use named prepared statements. Default false: what any
   * pooler accepts (PgBouncer refuses unknown startup parameters, and before 1.21 loses prepared statements
   * between transactions).
   */
  direct?: boolean
}

/**
 * Opens a postgres.js pool. The client sends keepalives; on a direct connection the server does too, so
 * that if a poller's host dies mid-batch the server notices within seconds (idle 10 s + 3 × 5 s probes),
 * rolls back, and the rows go to another replica (behind a pooler, the pooler's own keepalives do that).
 */
export function connect(url: string, options: ConnectOptions): Sql {
  const serverKeepalives = { tcp_keepalives_idle: 10, tcp_keepalives_interval: 5, tcp_keepalives_count: 3 }
  return postgres(url, {
    max: options.max ?? 1,
    keep_alive: 10,
    connect_timeout: 10,
    backoff: reconnectBackoffSeconds,
    onnotice: () => {},
    onclose: options.onclose,
    prepare: options.direct === true,
    // A connection must never be recycled under an open batch transaction.
    max_lifetime: 0,
    idle_timeout: 0,
    connection: {
      application_name: options.applicationName,
      // postgres.js reads timestamps as ISO text: a database or role defaulting to another DateStyle (Postgres,
      // SQL, German) would give Invalid Dates, and the settle's partition bounds and retention's cut-offs with them
      DateStyle: 'ISO',
      ...(options.direct === true ? serverKeepalives : {}),
    } as Record<string, unknown> as { application_name: string },
  })
}

/**
 * How long postgres.js waits before reconnecting, after `failures` failed connections of the pool in a row:
 * its own curve (jittered 3^failures / 100 s), capped at 1 s instead of 20. A query waits out this delay
 * before it even fails, so at 20 s a claim during an outage would hang where it should fail, be logged and
 * back off (the poller's own backoff paces the retries), and a recovered database would wait for it too.
 */
export function reconnectBackoffSeconds(failures: number, random: () => number = Math.random): number {
  return (0.5 + random() / 2) * Math.min(3 ** failures / 100, 1)
}

/**
 * Opens a pool on `url` once the database answers (see `waitForDatabase`), with what its connection allows:
 * a short first connection tells whether a pooler stands between, then the pool is opened to match.
 */
export async function openDatabase(url: string, options: ConnectOptions, timeoutMs: number, onRetry?: (error: unknown, delayMs: number) => void): Promise<{ sql: Sql; session: DatabaseSession }> {
  const probe = connect(url, { max: 1, applicationName: options.applicationName })
  let session: DatabaseSession
  try {
    session = await waitForDatabase(probe, describeTarget(url), timeoutMs, onRetry)
  } finally {
    await probe.end({ timeout: 5 })
  }
  return { sql: connect(url, { ...options, direct: !session.pooled }), session }
}

/** Host, port and database of a connection string, never its password: for messages and logs. */
export function describeTarget(url: string): string {
  try {
    // several hosts (`h1:5432,h2:5433`) are not a URL's host: read them as postgres.js does, then the rest
    const { hosts, firstHostUrl } = hostList(url)
    const parsed = new URL(firstHostUrl)
    const database = decodeURIComponent(parsed.pathname.slice(1))
    if (hosts.includes(',')) return `${hosts}/${database}`
    const host = parsed.searchParams.get('host') ?? (parsed.hostname || 'localhost')
    return `${host}:${parsed.port || '5432'}/${database}`
  } catch {
    return 'the database (connection string could not be parsed)'
  }
}

/** What the first query learnt of the connection. */
export interface DatabaseSession {
  /**
   * A connection pooler (PgBouncer, Odyssey, pgcat, …) stands between: the process id the connection was
   * given at startup (its cancel key) is not the server process that answers, as it always is on a direct
   * connection. Whether the pooler hands out server sessions per transaction cannot be seen from here.
   */
  pooled: boolean
}

/**
 * Waits until the database answers, retrying connection failures and "too many connections" with backoff
 * (0.25 s doubling to 5 s) for at most `timeoutMs`. Other errors (bad password, missing database) fail at
 * once, and so does a connection string that demands TLS of a server that does not offer it (a ConfigError:
 * no retry fixes it). Every message starts with `target`.
 */
export async function waitForDatabase(sql: Sql, target: string, timeoutMs: number, onRetry?: (error: unknown, delayMs: number) => void): Promise<DatabaseSession> {
  const deadline = Date.now() + timeoutMs
  for (let attempt = 1; ; attempt++) {
    try {
      const rows = await sql<Array<{ pid: number }>>`select pg_backend_pid() as pid`
      return { pooled: rows.state.pid !== rows[0]!.pid }
    } catch (error) {
      const retryable = isConnectionFailure(error) || sqlState(error) === SqlState.tooManyConnections
      if (retryable) await refuseTlsMismatch(sql, target)
      const remaining = deadline - Date.now()
      if (!retryable || remaining <= 0) {
        throw new ConnectionError(`cannot connect to ${target}: ${errorMessage(error)}${retryable ? ` (gave up after ${Math.round(timeoutMs / 1000)} s)` : ''}`, { cause: error })
      }
      const delay = Math.min(exponentialDelayMs(attempt, 250, 5_000), remaining)
      onRetry?.(error, delay)
      await new Promise((resolve) => setTimeout(resolve, delay))
    }
  }
}

/**
 * postgres.js falls back to plain text only with sslmode=prefer; with any other TLS mode a server without
 * TLS just drops the connection, which looks like an outage. Ask the server itself (an SSLRequest) and turn
 * its "no" into a ConfigError.
 */
async function refuseTlsMismatch(sql: Sql, target: string): Promise<void> {
  const { ssl, host, port, path } = sql.options as unknown as { ssl: unknown; host: string[]; port: number[]; path: string | false }
  if (!ssl || ssl === 'prefer' || path) return
  if ((await offersTls(host[0]!, port[0]!)) !== false) return
  const mode = typeof ssl === 'string' ? `sslmode=${ssl}` : 'TLS'
  throw new ConfigError(`cannot connect to ${target}: the connection string asks for ${mode}, but the server does not offer TLS (enable ssl on the server, or use sslmode=prefer or disable)`)
}

/** The server's answer to an SSLRequest: true ('S'), false ('N'), or undefined when it cannot be asked. */
function offersTls(host: string, port: number): Promise<boolean | undefined> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port })
    const done = (answer: boolean | undefined) => {
      socket.destroy()
      resolve(answer)
    }
    socket.setTimeout(5_000, () => done(undefined))
    socket.once('error', () => done(undefined))
    socket.once('connect', () => socket.write(Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]))) // length 8, code 80877103
    socket.once('data', (data: Buffer) => done(data[0] === 0x53 ? true : data[0] === 0x4e ? false : undefined))
  })
}
