import { type BatchHandler, withBatchForm } from '../poller/handler-registry.js'
import { integerOption } from '../poller/poller-options.js'
import { errorMessage, RetryLaterError } from '../errors.js'
import type { Handler } from '../types.js'
import type { SinkSpec } from './parse-sink.js'
import { type ResolvedSinkOptions, type Sink, sinkDefaults, type SinkOptions } from './sink.js'
import { sinkMisconfigured } from './sink-errors.js'

/** Sinks as handlers by pattern (each with a batch form the poller uses), and what closes them. */
export interface SinkHandlers {
  /** One handler per pattern; several sinks on one pattern are one handler that publishes to all of them. */
  readonly handlers: Record<string, Handler>
  readonly sinks: readonly Sink[]
  /** Closes every sink; call it after the poller stopped. Idempotent. */
  close(): Promise<void>
}

/**
 * Creates and connects the sinks of `specs` and returns them as handlers by pattern, to be registered
 * beside the user's handlers (`registerSinks`). Only the client libraries of the sinks used are loaded. A
 * ConfigError from one sink closes the others and rejects.
 */
export async function createSinkHandlers(specs: readonly SinkSpec[], options: SinkOptions): Promise<SinkHandlers> {
  const resolved: ResolvedSinkOptions = {
    log: options.log,
    timeoutMs: integerOption(options.timeoutMs, 'sink timeoutMs', sinkDefaults.timeoutMs, 1, 3_600_000),
    maxInFlight: integerOption(options.maxInFlight, 'sink maxInFlight', sinkDefaults.maxInFlight, 1, 1_000_000),
  }
  const sinks: Sink[] = []
  const closeAll = () => Promise.all(sinks.map((sink) => sink.close())).then(() => {})
  try {
    for (const spec of specs) sinks.push(await createSink(spec, resolved, options.secret))
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

/**
 * Registers the sinks' handlers on a poller pattern by pattern, beside the handlers it already has: a `*`
 * of the user's and a `*` sink both run.
 */
export function registerSinks(poller: { on(pattern: string, handler: Handler): unknown }, sinks: SinkHandlers): void {
  for (const [pattern, handler] of Object.entries(sinks.handlers)) poller.on(pattern, handler)
}

/** One sink, not yet connected. Its client library is imported here, so an unused one is never loaded. */
async function createSink(spec: SinkSpec, options: ResolvedSinkOptions, secret?: string): Promise<Sink> {
  switch (spec.kind) {
    case 'amqp':
      return (await import('./amqp-sink.js')).createAmqpSink(spec, options)
    case 'nats':
      return (await import('./nats-sink.js')).createNatsSink(spec, options)
    case 'redis':
      return (await import('./redis-sink.js')).createRedisSink(spec, options)
    case 'webhook':
      if (!secret) throw sinkMisconfigured(spec.name, 'needs a signing secret: --sink-secret, --sink-secret-file, OUTBOX_POLLER_SINK_SECRET or OUTBOX_POLLER_SINK_SECRET_FILE')
      return (await import('./webhook-sink.js')).createWebhookSink(spec, secret, options)
  }
}

/**
 * The handler of one pattern, with a batch form: the poller hands it all of a batch's matching events at
 * once, and each sink publishes them as one batch. Several sinks publish concurrently and an event succeeds
 * only when all confirmed it; a rejection by any of them charges the attempt, otherwise an unavailable one
 * defers it. Called directly, it publishes one event.
 */
function sinkHandler(sinks: Sink[]): Handler {
  const publishBatch: BatchHandler =
    sinks.length === 1
      ? (events, signal) => sinks[0]!.publishBatch(events, signal)
      : async (events, signal) => {
          const bySink = await Promise.all(sinks.map((sink) => sink.publishBatch(events, signal)))
          return events.map((_event, i) => combined(bySink.flatMap((results) => (results[i] === undefined ? [] : [results[i]]))))
        }
  return withBatchForm(
    async (event, ctx) => {
      const [error] = await publishBatch([event], ctx.signal)
      if (error !== undefined) throw error
    },
    publishBatch,
    { overlaps: sinks.every((sink) => sink.overlaps) },
  )
}

/** One event's failures at several sinks as one error: deferred only when every failure is an outage. */
function combined(failures: Error[]): Error | undefined {
  if (failures.length <= 1) return failures[0]
  const message = failures.map(errorMessage).join('; ')
  return failures.every((failure) => failure instanceof RetryLaterError) ? new RetryLaterError(message) : new Error(message)
}
