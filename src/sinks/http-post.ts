import { Agent as HttpAgent, type IncomingMessage, request as httpRequest } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'

/**
 * Keep-alive connections a webhook sink opens to its endpoint at most; further requests queue for a free one.
 * A batch's requests all start at once, and more connections than this only slow a receiver down (a local
 * `node:http` receiver answered far fewer requests per second on 250 connections than on 64, see BENCHMARKS.md).
 */
export const webhookConnections = 64

/** The part of an endpoint's answer a webhook sink reads. */
export interface HttpAnswer {
  status: number
  statusText: string
  retryAfter: string | null
  /** The body of a non-2xx answer, at most `excerptBytes`; '' for a 2xx (its body is drained unread). */
  text: string
}

/** Enough of an error body for `last_error` (which keeps 200 characters); the rest is drained unread. */
const excerptBytes = 4_096

/** A keep-alive POST client for one endpoint, on `node:http` (or `node:https`) with a pool of `webhookConnections`. */
export class HttpPoster {
  readonly #agent: HttpAgent
  readonly #request: typeof httpRequest

  constructor(readonly url: URL) {
    const https = url.protocol === 'https:'
    this.#agent = https ? new HttpsAgent({ keepAlive: true, maxSockets: webhookConnections }) : new HttpAgent({ keepAlive: true, maxSockets: webhookConnections })
    this.#request = https ? (httpsRequest as typeof httpRequest) : httpRequest
  }

  /** POSTs `body`; resolves once the whole answer arrived, rejects with the transport's error (or `signal`'s reason). Redirects are not followed. */
  post(headers: Record<string, string>, body: string, signal: AbortSignal): Promise<HttpAnswer> {
    return new Promise((resolve, reject) => {
      const outgoing = this.#request(this.url, { method: 'POST', agent: this.#agent, signal, headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) } }, (response) =>
        readAnswer(response).then(resolve, reject),
      )
      outgoing.on('error', reject)
      outgoing.end(body)
    })
  }

  close(): void {
    this.#agent.destroy()
  }
}

function readAnswer(response: IncomingMessage): Promise<HttpAnswer> {
  const status = response.statusCode ?? 0
  const keep = status < 200 || status >= 300
  const chunks: Buffer[] = []
  let kept = 0
  return new Promise((resolve, reject) => {
    response.on('data', (chunk: Buffer) => {
      if (keep && kept < excerptBytes) {
        chunks.push(chunk)
        kept += chunk.length
      }
    })
    response.on('error', reject)
    response.on('end', () =>
      resolve({
        status,
        statusText: response.statusMessage ?? '',
        retryAfter: typeof response.headers['retry-after'] === 'string' ? response.headers['retry-after'] : null,
        text: keep ? Buffer.concat(chunks).subarray(0, excerptBytes).toString('utf8') : '',
      }),
    )
  })
}
