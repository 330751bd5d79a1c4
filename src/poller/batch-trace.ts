import { type Context, context, type Link, ProxyTracer, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, type Tracer, trace } from '@opentelemetry/api'
import { errorMessage, RetryLaterError } from '../errors.js'
import type { ClaimedEvent } from './claimed-event.js'
import { formatTraceparent, parseTraceparent } from './traceparent.js'

/** The instrumentation scope of the poller's spans. */
export const tracerName = 'outbox-poller'

/** What every span of the poller says of where its events come from. */
const messagingSystem = 'outbox-poller'

/**
 * The spans of one batch: `outbox.batch` from its claim to its commit, and one consumer span per event,
 * `outbox.handle <event_type>`, a child of the writer's context (the traceparent stored in the event's
 * metadata) when there is one, else of the batch span, and linked to the batch span either way. Undefined
 * while no SDK is registered: `@opentelemetry/api` then hands out its no-op tracer, and the batch costs one
 * `getTracer` call, nothing per event.
 */
export function startBatchTrace(rows: readonly ClaimedEvent[], destination: string, startedAtMs: number): BatchTrace | undefined {
  const tracer = trace.getTracer(tracerName)
  // the global provider's own proxy, handed out until an SDK registers its provider
  if (tracer instanceof ProxyTracer) return undefined
  return new BatchTrace(tracer, rows, destination, startedAtMs)
}

export class BatchTrace {
  readonly #batch: Span
  readonly #link: Link
  readonly #spans: Array<EventSpan | undefined>
  #ended = false

  constructor(
    private readonly tracer: Tracer,
    private readonly rows: readonly ClaimedEvent[],
    private readonly destination: string,
    startedAtMs: number,
  ) {
    this.#batch = tracer.startSpan('outbox.batch', {
      kind: SpanKind.CONSUMER,
      startTime: performance.timeOrigin + startedAtMs,
      attributes: {
        'messaging.system': messagingSystem,
        'messaging.operation.type': 'receive',
        'messaging.operation.name': 'claim',
        'messaging.destination.name': destination,
        'messaging.batch.message_count': rows.length,
      },
    })
    this.#link = { context: this.#batch.spanContext() }
    this.#spans = new Array<EventSpan | undefined>(rows.length)
  }

  /** The span of the batch's `index`-th event, started on first call; its context goes into the sinks' messages. */
  eventSpan(index: number): EventSpan {
    return (this.#spans[index] ??= new EventSpan(this.tracer, this.rows[index]!, this.#batch, this.#link, this.destination))
  }

  /** Ends the batch span (once), with an error status when the batch rolled back, and any event span still open with it. */
  end(error?: unknown): void {
    if (this.#ended) return
    this.#ended = true
    if (error !== undefined) recordError(this.#batch, error)
    for (const span of this.#spans) span?.end(error ?? new Error('the batch ended before this event was settled'))
    this.#batch.end()
  }
}

/** One event's consumer span. */
export class EventSpan {
  readonly #span: Span
  readonly #context: Context
  #ended = false

  constructor(tracer: Tracer, event: ClaimedEvent, batch: Span, link: Link, destination: string) {
    const writer = parseTraceparent(event.metadata?.traceparent)
    const parent = writer === undefined ? trace.setSpan(ROOT_CONTEXT, batch) : trace.setSpanContext(ROOT_CONTEXT, writer)
    this.#span = tracer.startSpan(
      `outbox.handle ${event.event_type}`,
      {
        kind: SpanKind.CONSUMER,
        links: [link],
        attributes: {
          'messaging.system': messagingSystem,
          'messaging.operation.type': 'process',
          'messaging.operation.name': 'handle',
          'messaging.destination.name': destination,
          'messaging.message.id': event.event_id,
          'outbox.event.id': event.id,
          'outbox.event.type': event.event_type,
          'outbox.entity.type': event.entity_type,
          'outbox.attempt': event.attempt,
        },
      },
      parent,
    )
    this.#context = trace.setSpan(parent, this.#span)
    const spanContext = this.#span.spanContext()
    if (trace.isSpanContextValid(spanContext)) event.traceWith(formatTraceparent(spanContext))
  }

  /** Runs a handler with this span active, so the spans it starts are its children (with a context manager registered). */
  run<T>(fn: () => T): T {
    return context.with(this.#context, fn)
  }

  /** Ends the span (once); a failure is recorded on it, a deferral (RetryLaterError) only noted. */
  end(error?: unknown): void {
    if (this.#ended) return
    this.#ended = true
    if (error instanceof RetryLaterError) this.#span.setAttribute('outbox.deferred', true)
    else if (error !== undefined) recordError(this.#span, error)
    this.#span.end()
  }
}

function recordError(span: Span, error: unknown): void {
  span.recordException(error instanceof Error ? error : errorMessage(error))
  span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(error) })
  span.setAttribute('error.type', error instanceof Error ? error.constructor.name : 'Error')
}
