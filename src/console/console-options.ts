import { ConfigError } from '../errors.js'

/** Options of `outbox-poller console`. */
export interface ConsoleOptions {
  /** Where to listen. Default: 127.0.0.1:7407. Anywhere but a loopback address needs a token. */
  host?: string
  port?: number
  /** The operator's token: needed for every action, and for reading too off loopback. Default: none (read-only, loopback only). */
  token?: string
  /** Show event payloads (they can hold personal data). Default: false. */
  showPayloads?: boolean
}

export interface ResolvedConsoleOptions {
  readonly host: string
  readonly port: number
  readonly token: string | undefined
  readonly showPayloads: boolean
  /** Bound to a loopback address: reading needs no token there. */
  readonly loopback: boolean
}

export const defaultConsolePort = 7407

/** Most events an action changes without a second, explicit confirmation. */
export const consoleConfirmLimit = 1000

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host)
}

/** Validates and freezes; off loopback a token is required, and a token must be long enough to resist guessing. */
export function resolveConsoleOptions(input: ConsoleOptions, names: { listen: string; token: string } = { listen: 'host', token: 'token' }): ResolvedConsoleOptions {
  const host = input.host ?? '127.0.0.1'
  const token = input.token === undefined || input.token === '' ? undefined : input.token
  const loopback = isLoopback(host)
  if (!loopback && token === undefined) {
    throw new ConfigError(`${names.listen} ${host} is not a loopback address: the console refuses to start there without a token (${names.token})`)
  }
  if (token !== undefined && token.length < 16) throw new ConfigError(`${names.token} must be at least 16 characters (got ${token.length})`)
  return Object.freeze({ host, port: input.port ?? defaultConsolePort, token, showPayloads: input.showPayloads ?? false, loopback })
}
