/** A mistake in the user's input (flag, env var, option, handler module): printed as one line, exit code 2. */
export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** The database could not be reached in time: exit code 1. */
export class ConnectionError extends Error {
  override name = 'ConnectionError'
}

/**
 * Thrown by a handler (or a sink) when the event cannot be handled now for a reason that is not the event's
 * fault, such as a broker that is down. The event goes back to the queue after a backoff with no attempt
 * charged, so an outage dead-letters nothing; the poller backs off while every event of its batch waits.
 */
export class RetryLaterError extends Error {
  override name = 'RetryLaterError'
}

/** SQLSTATE codes we react to. */
export const SqlState = {
  undefinedTable: '42P01',
  undefinedColumn: '42703',
  invalidName: '42602',
  invalidSchemaName: '3F000',
  syntaxError: '42601',
  /** max_connections, or a role's or database's CONNECTION LIMIT, is reached: retried at start. */
  tooManyConnections: '53300',
} as const

/** The SQLSTATE of a driver error, if it has one. */
export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

/** Error codes of a network that is down or a peer that went away (Node's sockets, undici's fetch). */
const networkErrorCodes = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
])

/** postgres.js's own codes for a connection it lost or could not open. */
const postgresJsConnectionCodes = new Set(['CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT'])

/** Whether the error, or one of its causes, is a network failure (client libraries wrap the socket's error). */
export function isNetworkError(error: unknown): boolean {
  for (let current = error, depth = 0; current instanceof Error && depth < 5; current = current.cause, depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === 'string' && networkErrorCodes.has(code)) return true
  }
  return false
}

/** Connection-level failures (server gone, refused, reset): the batch in hand rolled back, reconnect and carry on. */
export function isConnectionFailure(error: unknown): boolean {
  const code = sqlState(error)
  if (code === undefined) return false
  return (
    code.startsWith('08') || // connection exception class
    code === '57P01' || // admin_shutdown
    code === '57P02' || // crash_shutdown
    code === '57P03' || // cannot_connect_now
    postgresJsConnectionCodes.has(code) ||
    networkErrorCodes.has(code)
  )
}

/**
 * The server's own words for an error it sent (`57014: canceling statement due to statement timeout`,
 * `57P01: terminating connection due to administrator command`); undefined for client-side errors.
 */
export function serverReason(error: unknown): string | undefined {
  const fields = error as { severity?: unknown; code?: unknown; message?: unknown } | null
  return typeof fields?.severity === 'string' ? `${String(fields.code)}: ${String(fields.message)}` : undefined
}

/** An error's message, or the text of a thrown non-Error: the one way an error becomes text. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
