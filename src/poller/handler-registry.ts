import { ConfigError } from '../errors.js'
import { parseEventTypePattern } from './event-type-pattern.js'
import type { Handler, HandlerMap, OutboxEvent } from '../types.js'

/**
 * The batch form of a handler: it gets all of a batch's events that match it in one call (or, while a
 * supervisor is told the events ahead of the dispatch, one call per announced window), so a sink can use its
 * broker's own batching. It resolves with one entry per event, in order: undefined when the event is done,
 * otherwise the event's error (a RetryLaterError defers it). A rejection fails every event of the call.
 * `signal` aborts when the call times out (`handlerTimeoutMs`) or the batch is stopped.
 */
export type BatchHandler = (events: readonly OutboxEvent[], signal: AbortSignal) => Promise<ReadonlyArray<Error | undefined>>

const batchFormKey = Symbol('outbox-poller batch form')
const overlapsKey = Symbol('outbox-poller overlaps')

/**
 * A handler that also has a batch form: registered like any handler, the poller dispatches it with the
 * batch form; called directly, it handles one event. `overlaps`: its batches may overlap (see PollerOptions.overlap).
 */
export function withBatchForm(handler: Handler, batch: BatchHandler, options: { overlaps?: boolean } = {}): Handler {
  return Object.assign(handler, { [batchFormKey]: batch, [overlapsKey]: options.overlaps === true })
}

function batchFormOf(handler: Handler): BatchHandler | undefined {
  return (handler as { [batchFormKey]?: BatchHandler })[batchFormKey]
}

/** What runs for one event type: the handlers called per event, and the batch handlers that take the batch's events at once. */
export interface Route {
  readonly each: readonly Handler[]
  readonly batch: readonly BatchHandler[]
}

/**
 * Routes event types to handlers. Patterns: an exact type (`issue.created`), a prefix wildcard
 * (`issue.*` matches `issue.created` and `issue.comment.added`) or `*` for everything. Every matching
 * handler runs. Routes are cached per event type, so routing costs one map lookup per event.
 */
export class HandlerRegistry {
  readonly #routes: Array<{ pattern: string; prefix: string | null; handler: Handler }> = []
  readonly #cache = new Map<string, Route>()

  constructor(handlers?: HandlerMap) {
    if (handlers !== undefined) this.addAll(handlers)
  }

  /** Registers one handler for a pattern. */
  add(pattern: string, handler: Handler): void {
    if (typeof handler !== 'function') throw new ConfigError(`handler for ${JSON.stringify(pattern)} must be a function (got ${typeof handler})`)
    const parsed = parseEventTypePattern(pattern, 'handler pattern')
    const prefix = parsed.kind === 'all' ? '' : parsed.kind === 'prefix' ? parsed.prefix : null
    this.#routes.push({ pattern, prefix, handler })
    this.#cache.clear()
  }

  /** Registers a function (for every event) or a map of patterns to functions. */
  addAll(handlers: HandlerMap): void {
    if (typeof handlers === 'function') return this.add('*', handlers)
    if (handlers === null || typeof handlers !== 'object') {
      throw new ConfigError(`handlers must be a function or an object of event-type patterns to functions (got ${handlers === null ? 'null' : typeof handlers})`)
    }
    for (const [pattern, handler] of Object.entries(handlers)) this.add(pattern, handler)
  }

  get size(): number {
    return this.#routes.length
  }

  /** Whether a handler with a batch form is registered: without one, the dispatch skips the batch path. */
  get hasBatchForms(): boolean {
    return this.#routes.some((route) => batchFormOf(route.handler) !== undefined)
  }

  /** Whether every handler is a batch form whose batches may overlap (a Redis or RabbitMQ sink): a batch then runs no code of the user's. */
  get overlapsBatches(): boolean {
    return this.#routes.length > 0 && this.#routes.every((route) => (route.handler as { [overlapsKey]?: boolean })[overlapsKey] === true)
  }

  /** The handlers for an event type, in registration order: those with a batch form under `batch`, the others under `each`. */
  match(eventType: string): Route {
    let route = this.#cache.get(eventType)
    if (route === undefined) {
      const each: Handler[] = []
      const batch: BatchHandler[] = []
      for (const { pattern, prefix, handler } of this.#routes) {
        if (prefix === null ? pattern !== eventType : !eventType.startsWith(prefix)) continue
        const form = batchFormOf(handler)
        if (form === undefined) each.push(handler)
        else batch.push(form)
      }
      route = { each, batch }
      this.#cache.set(eventType, route)
    }
    return route
  }
}
