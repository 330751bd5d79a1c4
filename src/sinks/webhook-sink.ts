import { isNetworkError } from '../errors.js'
import type { OutboxEvent } from '../types.js'
import { eventMessageJson, eventTraceparent } from './event-message.js'
import { type HttpAnswer, HttpPoster } from './http-post.js'
import { OutageLog, outageRetryDelayMs } from './outage-log.js'
import type { WebhookSinkSpec } from './parse-sink.js'
import { Semaphore } from './semaphore.js'
import type { ResolvedSinkOptions, Sink } from './sink.js'
import { sinkErrorMessage, sinkRejected, sinkUnavailable } from './sink-errors.js'
import { signWebhook, webhookSigningKey } from './webhook-signature.js'

/** Statuses worth another try (the endpoint's trouble, not the event's); they still charge an attempt. */
const retryableStatuses = new Set([408, 429, 500, 502, 503, 504])
/** Longest `Retry-After` honoured: a larger one is clamped, so a misconfigured endpoint cannot park the sink for days. */
const maxRetryAfterMs = 3_600_000

/**
 * POSTs each event as JSON, signed per Standard Webhooks (`webhook-id` = event id, `webhook-timestamp`,
 * `webhook-signature`). A 2xx delivers it. Any other status is a failed attempt (retried with backoff,
 * dead-lettered after the last one); with 408, 429 or 5xx a `Retry-After` also pauses the whole sink until
 * then: events meanwhile wait with no attempt charged. An endpoint that cannot be reached (connection
 * refused, DNS, TLS) charges nothing: the sink pauses with backoff, logs the outage once, and lets one
 * event through as a probe when the pause ends. A request with no response within `timeoutMs` is a
 * failed attempt, like a 408. Credentials in the URL (`https://user:pass@host/…`) are sent as Basic auth.
 */
export function createWebhookSink(spec: WebhookSinkSpec, secret: string, options: ResolvedSinkOptions): Sink {
  return new WebhookSink(spec, webhookSigningKey(secret), options)
}

class WebhookSink implements Sink {
  readonly name: string
  readonly pattern: string
  readonly overlaps = false
  readonly #outage: OutageLog
  readonly #slots: Semaphore
  /** Until then every event is deferred: the endpoint is unreachable, or asked us to wait. */
  #pausedUntil = 0
  #pauseReason = ''
  #unreachable = 0
  /** After a pause, one event probes the endpoint while the others keep waiting. */
  #probing = false
  /** Keep-alive connections to the endpoint (its URL without user:password, which go in `authorization`). */
  readonly #poster: HttpPoster
  readonly #authorization: Record<string, string>

  constructor(
    private readonly spec: WebhookSinkSpec,
    private readonly key: Buffer,
    private readonly options: ResolvedSinkOptions,
  ) {
    this.name = spec.name
    this.pattern = spec.pattern
    this.#outage = new OutageLog(options.log, spec.name)
    this.#slots = new Semaphore(options.maxInFlight)
    const url = new URL(spec.url)
    const credentials = url.username === '' && url.password === '' ? undefined : `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`
    url.username = ''
    url.password = ''
    this.#poster = new HttpPoster(url)
    this.#authorization = credentials === undefined ? {} : { authorization: `Basic ${Buffer.from(credentials).toString('base64')}` }
  }

  /** HTTP needs no connection ahead of time. */
  async connect(): Promise<void> {}

  async close(): Promise<void> {
    this.#poster.close()
  }

  async publish(event: OutboxEvent, signal?: AbortSignal): Promise<void> {
    const probe = this.#admit()
    try {
      await this.#slots.acquire(signal)
      try {
        await this.#post(event, signal)
      } finally {
        this.#slots.release()
      }
    } finally {
      if (probe) this.#probing = false
    }
  }

  /** HTTP has no batch: the batch's requests go out together, at most `maxInFlight` at a time, on at most `webhookConnections` connections. */
  publishBatch(events: readonly OutboxEvent[], signal?: AbortSignal): Promise<Array<Error | undefined>> {
    return Promise.all(events.map((event) => this.publish(event, signal).then(() => undefined, (error: unknown) => error as Error)))
  }

  /** Throws RetryLaterError while paused; returns whether this event is the probe that ends a pause. */
  #admit(): boolean {
    if (Date.now() < this.#pausedUntil) throw sinkUnavailable(this.name, this.#pauseReason)
    if (!this.#outage.isDown) return false
    if (this.#probing) throw sinkUnavailable(this.name, this.#pauseReason)
    this.#probing = true
    return true
  }

  async #post(event: OutboxEvent, signal: AbortSignal | undefined): Promise<void> {
    const body = eventMessageJson(event)
    const timestamp = Math.floor(Date.now() / 1000)
    const timeout = AbortSignal.timeout(this.options.timeoutMs)
    const traceparent = eventTraceparent(event)
    let response: HttpAnswer
    try {
      const headers = {
        'content-type': 'application/json',
        'user-agent': 'outbox-poller',
        'webhook-id': event.event_id,
        'webhook-timestamp': String(timestamp),
        'webhook-signature': signWebhook(this.key, event.event_id, timestamp, body),
        ...this.#authorization,
        ...(traceparent === undefined ? {} : { traceparent }),
      }
      response = await this.#poster.post(headers, body, signal === undefined ? timeout : AbortSignal.any([signal, timeout]))
    } catch (error) {
      if (signal?.aborted) throw signal.reason // the handler timed out or the poller is forced to stop
      if (timeout.aborted) throw sinkRejected(this.name, `no response within ${this.options.timeoutMs} ms`)
      throw this.#unreachableNow(error)
    }
    this.#unreachable = 0
    if (response.status >= 200 && response.status < 300) {
      this.#outage.up()
      return
    }
    const status = `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}${bodyExcerpt(response.text)}`
    const waitMs = retryableStatuses.has(response.status) ? retryAfterMs(response.retryAfter) : undefined
    if (waitMs !== undefined && waitMs > 0) this.#pause(waitMs, `${status}; Retry-After ${Math.ceil(waitMs / 1000)} s`)
    else this.#outage.up() // it answered: reachable, and not asking us to wait
    if (response.status >= 300 && response.status < 400) throw sinkRejected(this.name, `${status} (redirects are not followed)`)
    throw sinkRejected(this.name, status)
  }

  #unreachableNow(error: unknown): Error {
    // Requests that were already in flight when a pause began fail together: they count as one failure.
    if (Date.now() >= this.#pausedUntil) this.#unreachable++
    const reason = sinkErrorMessage(error, this.spec.secrets)
    this.#pause(outageRetryDelayMs(this.#unreachable), isNetworkError(error) ? reason : `request failed: ${reason}`)
    return sinkUnavailable(this.name, reason)
  }

  #pause(ms: number, reason: string): void {
    this.#pausedUntil = Math.max(this.#pausedUntil, Date.now() + ms)
    this.#pauseReason = reason
    this.#outage.down(reason)
  }
}

/** `Retry-After` as delay-seconds or an HTTP date, in ms (at most an hour); undefined when absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number | undefined {
  if (header === null || header.trim() === '') return undefined
  const text = header.trim()
  const ms = /^\d+$/.test(text) ? Number(text) * 1000 : Date.parse(text) - now
  return Number.isFinite(ms) ? Math.min(Math.max(ms, 0), maxRetryAfterMs) : undefined
}

/** The start of an error response's body, for `last_error`: what the endpoint said is usually the best clue. */
function bodyExcerpt(text: string): string {
  const line = text.replace(/\s+/g, ' ').trim()
  if (line === '') return ''
  return `: ${line.length > 200 ? `${line.slice(0, 200)}…` : line}`
}
