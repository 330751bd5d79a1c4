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
  duplicateObject: '42710',
} as const

/** The SQLSTATE of a driver error, if it has one. */
export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
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
    ['CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH'].includes(code)
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

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
