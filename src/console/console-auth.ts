import { createHmac, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { ResolvedConsoleOptions } from './console-options.js'

/** The session cookie's name. Its value is derived from the token, never the token itself. */
export const sessionCookie = 'outbox_console_session'

/**
 * Who may do what, and from where. The token is entered once in a form; the browser then holds an
 * HttpOnly, SameSite=Strict cookie derived from it (so the token never appears in a URL, a page or a log),
 * valid until the console restarts with another token. Every action is a POST from the console's own
 * origin: a page elsewhere can neither send the cookie (SameSite) nor pass the Origin check.
 */
export class ConsoleAuth {
  readonly #session: Buffer | undefined
  readonly #hosts: ReadonlySet<string> | undefined

  constructor(private readonly options: ResolvedConsoleOptions) {
    this.#session = options.token === undefined ? undefined : sessionValue(options.token)
    const port = options.port
    // On loopback only the loopback names are accepted as Host: a DNS-rebinding page cannot read the console.
    this.#hosts = options.loopback ? new Set([`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, `${hostForUrl(options.host)}:${port}`]) : undefined
  }

  /** Actions need a token: without one the console is read-only. */
  get actionsEnabled(): boolean {
    return this.#session !== undefined
  }

  /** Reading needs the token too off loopback (errors and metadata can be sensitive). */
  get readNeedsToken(): boolean {
    return !this.options.loopback
  }

  /** The Host header names this console (see the constructor). */
  hostAllowed(request: IncomingMessage): boolean {
    return this.#hosts === undefined || this.#hosts.has(request.headers.host ?? '')
  }

  /** The request carries the session cookie of the current token. */
  signedIn(request: IncomingMessage): boolean {
    if (this.#session === undefined) return false
    const value = cookies(request)[sessionCookie]
    if (value === undefined || !/^[0-9a-f]{64}$/.test(value)) return false
    return timingSafeEqual(Buffer.from(value, 'hex'), this.#session)
  }

  /** Whether `token` is the console's token (compared in constant time). */
  tokenMatches(token: string): boolean {
    return this.#session !== undefined && timingSafeEqual(sessionValue(token), this.#session)
  }

  /** The Set-Cookie header after a good token. */
  sessionHeader(): string {
    return `${sessionCookie}=${this.#session!.toString('hex')}; HttpOnly; SameSite=Strict; Path=/`
  }

  /** A POST is from a page of this console: its Origin is this very host. */
  sameOrigin(request: IncomingMessage): boolean {
    const origin = request.headers.origin
    if (origin === undefined || request.headers.host === undefined) return false
    const site = request.headers['sec-fetch-site']
    if (site !== undefined && site !== 'same-origin') return false
    return origin === `http://${request.headers.host}`
  }
}

function sessionValue(token: string): Buffer {
  return createHmac('sha256', token).update('outbox-poller console session').digest()
}

function hostForUrl(host: string): string {
  return host.includes(':') ? `[${host}]` : host
}

function cookies(request: IncomingMessage): Record<string, string> {
  const jar: Record<string, string> = {}
  for (const part of (request.headers.cookie ?? '').split(';')) {
    const at = part.indexOf('=')
    if (at > 0) jar[part.slice(0, at).trim()] = part.slice(at + 1).trim()
  }
  return jar
}
