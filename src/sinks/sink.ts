import type { Logger, OutboxEvent } from '../types.js'

/**
 * A destination events are relayed to: a broker or an HTTP endpoint. A sink is a handler like any other,
 * so an event is marked processed only after every matching sink confirmed it, and a sink's failure goes
 * through the poller's retry and dead-letter path.
 */
export interface Sink {
  /** The sink's URL with its credentials masked: the only form in which it appears in messages and logs. */
  readonly name: string
  /** Event-type pattern it relays (`issue.created`, `issue.*`, `*`). */
  readonly pattern: string
  /**
   * Whether the poller may have a second batch in flight with it (PollerOptions.overlap), where that was measured to
   * pay: Redis Streams, whose batch is one script call, so a second batch hides the database's part of the first,
   * and RabbitMQ, whose confirms of a lone batch take the broker's whole processing time of it (a second batch's
   * messages keep it busy meanwhile). Not NATS JetStream (one batch at a time already reaches about its ceiling;
   * a second gained nothing), see BENCHMARKS.md. Not a webhook: its sender bounds it (one request per event), a
   * second batch would only queue behind the first.
   */
  readonly overlaps: boolean
  /**
   * Connects. A broker that is down is not an error: the outage is logged once and the sink reconnects in the
   * background. A mistake no retry fixes (credentials refused, a missing exchange or stream) rejects with a ConfigError.
   */
  connect(): Promise<void>
  /**
   * Resolves only once the broker (or endpoint) confirmed the event. Rejects with RetryLaterError while it is
   * unavailable (no attempt charged), or with an Error carrying its words for a rejection of this event.
   */
  publish(event: OutboxEvent, signal?: AbortSignal): Promise<void>
  /**
   * Publishes a batch's events together, using the broker's batching (one pipelined write to Redis, every
   * JetStream publish in flight before the acks are awaited, every AMQP publish before the confirms), and
   * resolves with one entry per event, in order: undefined once the broker confirmed it, otherwise the error
   * `publish` would have thrown for it. One rejected message fails only its own entry.
   */
  publishBatch(events: readonly OutboxEvent[], signal?: AbortSignal): Promise<Array<Error | undefined>>
  /** Closes the connection; idempotent. */
  close(): Promise<void>
}

export interface SinkOptions {
  /** Signing secret of webhook sinks: `whsec_<base64>` (decoded) or any other text (its bytes). Required with a webhook sink. */
  secret?: string
  /** Outages (once each), connections and rejections are logged here. */
  log: Logger
  /**
   * How long a batch's publishes wait for their confirms (a webhook: each whole request), and a connection attempt for the
   * broker. Keep it below the handler timeout, or the handler times out first and the event is charged.
   * Default 10 s; `sinkTimeoutMs` derives it from a handler timeout.
   */
  timeoutMs?: number
  /** Messages each sink has in flight at most (published, not yet confirmed): a batch larger than this is published in windows of it. Default 1000. */
  maxInFlight?: number
}

/** The options every sink is built with: defaults applied and checked. */
export interface ResolvedSinkOptions {
  readonly log: Logger
  readonly timeoutMs: number
  readonly maxInFlight: number
}

export const sinkDefaults = {
  timeoutMs: 10_000,
  maxInFlight: 1_000,
} as const

/**
 * The publish timeout for a handler timeout: at most 80 % of it (and at most the default), so a slow broker
 * defers the event (no attempt charged) before the handler timeout would charge it.
 */
export function sinkTimeoutMs(handlerTimeoutMs: number): number {
  return Math.max(1, Math.min(sinkDefaults.timeoutMs, Math.floor(handlerTimeoutMs * 0.8)))
}
