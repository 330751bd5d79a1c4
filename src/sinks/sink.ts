import { integerOption } from '../poller/poller-options.js'
import { ConfigError, RetryLaterError } from '../errors.js'
import type { Handler, Logger, OutboxEvent } from '../types.js'
import type { SinkSpec } from './parse-sink.js'

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
   * Connects. A broker that is down is not an error: the outage is logged once and the sink reconnects in the
   * background. A mistake no retry fixes (credentials refused, a missing exchange or stream) rejects with a ConfigError.
   */
  connect(): Promise<void>
  /**
   * Resolves only once the broker (or endpoint) confirmed the event. Rejects with RetryLaterError while it is
   * unavailable (no attempt charged), or with an Error carrying its words for a rejection of this event.
   */
  publish(event: OutboxEvent, signal?: AbortSignal): Promise<void>
  /** Closes the connection; idempotent. */
  close(): Promise<void>
}

export interface SinkOptions {
  /** Signing secret of webhook sinks: `whsec_<base64>` (decoded) or any other text (its bytes). Required with a webhook sink. */
  secret?: string
  /** Outages (once each), connections and rejections are logged here. */
  log: Logger
  /**
   * How long a publish waits for its confirm (a webhook: the whole request), and a connection attempt for the
   * broker. Keep it below the handler timeout, or the handler times out first and the event is charged.
   * Default 10 s.
   */
  timeoutMs?: number
  /** Messages each sink has in flight at most (published, not yet confirmed). Default 256. */
  maxInFlight?: number
}

export const sinkDefaults = {
  timeoutMs: 10_000,
  maxInFlight: 256,
} as const

/** Sinks as handlers by pattern, and what closes them. */
export interface SinkHandlers {
  /** One handler per pattern; several sinks on one pattern are one handler that publishes to all of them. */
  readonly handlers: Record<string, Handler>
  readonly sinks: readonly Sink[]
  /** Closes every sink; call it after the poller stopped. Idempotent. */
  close(): Promise<void>
}

/**
 * Creates and connects the sinks of `specs` and returns them as handlers by pattern, to be registered
 * beside the user's handlers. Only the client libraries of the sinks used are loaded. A ConfigError from
 * one sink closes the others and rejects.
 */
export async function createSinkHandlers(specs: readonly SinkSpec[], options: SinkOptions): Promise<SinkHandlers> {
  const resolved = {
    ...options,
    timeoutMs: integerOption(options.timeoutMs, 'sink timeoutMs', sinkDefaults.timeoutMs, 1, 3_600_000),
    maxInFlight: integerOption(options.maxInFlight, 'sink maxInFlight', sinkDefaults.maxInFlight, 1, 1_000_000),
  }
  const sinks: Sink[] = []
  const closeAll = () => Promise.all(sinks.map((sink) => sink.close())).then(() => {})
  try {
    for (const spec of specs) sinks.push(await createSink(spec, resolved))
    await Promise.all(sinks.map((sink) => sink.connect()))
  } catch (error) {
    await closeAll()
    throw error
  }
  const byPattern = new Map<string, Sink[]>()
  for (const sink of sinks) byPattern.set(sink.pattern, [...(byPattern.get(sink.pattern) ?? []), sink])
  const handlers: Record<string, Handler> = {}
  for (const [pattern, group] of byPattern) handlers[pattern] = sinkHandler(group)
  for (const sink of sinks) options.log.info({ sink: sink.name, pattern: sink.pattern }, 'relaying to sink')
  let closing: Promise<void> | undefined
  return { handlers, sinks, close: () => (closing ??= closeAll()) }
}

/** One sink, not yet connected. Its client library is imported here, so an unused one is never loaded. */
export async function createSink(spec: SinkSpec, options: SinkOptions & Required<Pick<SinkOptions, 'timeoutMs' | 'maxInFlight'>>): Promise<Sink> {
  switch (spec.kind) {
    case 'amqp':
      return (await import('./amqp-sink.js')).createAmqpSink(spec, options)
    case 'nats':
      return (await import('./nats-sink.js')).createNatsSink(spec, options)
    case 'redis':
      return (await import('./redis-sink.js')).createRedisSink(spec, options)
    case 'webhook':
      if (!options.secret) throw new ConfigError(`sink ${JSON.stringify(spec.name)} needs a signing secret: --sink-secret, OUTBOX_POLLER_SINK_SECRET or OUTBOX_POLLER_SINK_SECRET_FILE`)
      return (await import('./webhook-sink.js')).createWebhookSink(spec, { ...options, secret: options.secret })
  }
}

/**
 * The handler of one pattern. Several sinks publish concurrently and the event succeeds only when all
 * confirmed; a rejection by any of them charges the attempt, otherwise an unavailable one defers it.
 */
function sinkHandler(sinks: Sink[]): Handler {
  if (sinks.length === 1) {
    const sink = sinks[0]!
    return (event, ctx) => sink.publish(event, ctx.signal)
  }
  return async (event, ctx) => {
    const results = await Promise.allSettled(sinks.map((sink) => sink.publish(event, ctx.signal)))
    const failures = results.flatMap((result) => (result.status === 'rejected' ? [result.reason as unknown] : []))
    if (failures.length === 0) return
    const message = failures.map((failure) => (failure instanceof Error ? failure.message : String(failure))).join('; ')
    throw failures.every((failure) => failure instanceof RetryLaterError) ? new RetryLaterError(message) : new Error(message)
  }
}
