import { RetryLaterError } from './errors.js'
import type { HandlerRegistry } from './handler-registry.js'
import type { ClaimedEvent } from './claimed-event.js'
import type { Sql } from 'postgres'
import { EventContext, SavepointTurns } from './event-context.js'
import type { Handler, Logger, OutboxEvent } from './types.js'

export interface DispatchOptions {
  concurrency: number
  handlerTimeoutMs: number
  log: Logger
}

/** What happened to each event of a batch. */
export interface BatchOutcome {
  /** Every matching handler succeeded. */
  succeeded: OutboxEvent[]
  /** A handler threw, rejected or timed out. */
  failed: Array<{ event: OutboxEvent; error: unknown }>
  /** No handler matched. */
  unmatched: OutboxEvent[]
  /** A handler threw RetryLaterError: back to the queue, no attempt charged. */
  deferred: OutboxEvent[]
  /** Milliseconds from each handled event's created_at (its writer's transaction) to its first handler's start. */
  latencyMs: number[]
  /** How long each event's handlers took, in ms, by event type. */
  handlerMs: Map<string, number[]>
}

/**
 * Runs the handlers of a batch, at most `concurrency` events at a time, so one slow handler does not hold
 * the whole batch's locks for batch × timeout. An event's handlers run one after another; the first
 * failure fails the event (it is retried whole). A failure never touches the other events of the batch.
 */
export class BatchDispatch {
  readonly #inFlight = new Set<EventContext>()
  /** Set by a forced stop: no further event of the batch starts. */
  #aborted = false

  constructor(
    private readonly registry: HandlerRegistry,
    private readonly options: DispatchOptions,
  ) {}

  /** Runs the batch's handlers; `connection` (holding the batch transaction) serves `ctx.tx()`. */
  async run(rows: readonly ClaimedEvent[], connection?: Sql): Promise<BatchOutcome> {
    const turns = connection === undefined ? undefined : new SavepointTurns(connection)
    const outcome: BatchOutcome = { succeeded: [], failed: [], unmatched: [], deferred: [], latencyMs: [], handlerMs: new Map() }
    let next = 0
    const worker = async () => {
      while (next < rows.length && !this.#aborted) {
        const event = rows[next++]!
        const handlers = this.registry.match(event.event_type)
        if (handlers.length === 0) {
          outcome.unmatched.push(event)
          continue
        }
        const startedAt = Date.now()
        const startedMs = performance.now()
        outcome.latencyMs.push(startedAt - event.created_at.getTime())
        const ctx = new EventContext(event, this.options.log, turns)
        let succeeded = false
        try {
          for (const handler of handlers) {
            const pending = this.#runOne(handler, event, ctx)
            if (pending !== undefined) await pending // a synchronous handler costs no microtask
          }
          succeeded = true
        } catch (error) {
          if (error instanceof RetryLaterError) outcome.deferred.push(event)
          else outcome.failed.push({ event, error })
        }
        try {
          const ending = ctx.finish(succeeded)
          if (ending !== undefined) await ending
          if (succeeded) outcome.succeeded.push(event)
        } catch (error) {
          // the savepoint could not be kept: the event's writes are gone with it, so the event fails
          if (succeeded) outcome.failed.push({ event, error })
        }
        let durations = outcome.handlerMs.get(event.event_type)
        if (durations === undefined) outcome.handlerMs.set(event.event_type, (durations = []))
        durations.push(performance.now() - startedMs)
      }
    }
    const workers: Promise<void>[] = []
    for (let i = 0; i < Math.min(this.options.concurrency, rows.length); i++) workers.push(worker())
    await Promise.all(workers)
    return outcome
  }

  /** Fails every handler still running (forced shutdown): their signals abort and their events fail. */
  abortAll(reason: Error): void {
    this.#aborted = true
    for (const ctx of this.#inFlight) ctx.fail(reason)
  }

  #runOne(handler: Handler, event: OutboxEvent, ctx: EventContext): void | Promise<void> {
    const result = handler(event, ctx)
    // A synchronous handler needs no timer; an async one races its timeout.
    if (result === undefined || typeof (result as Promise<void>).then !== 'function') return
    return new Promise<void>((resolve, reject) => {
      const settle = () => {
        clearTimeout(timer)
        this.#inFlight.delete(ctx)
      }
      ctx.fail = (reason) => {
        settle()
        ctx.abort(reason)
        reject(reason)
      }
      const timer = setTimeout(() => ctx.fail(new Error(`handler timed out after ${this.options.handlerTimeoutMs} ms`)), this.options.handlerTimeoutMs)
      this.#inFlight.add(ctx)
      result.then(
        () => (settle(), resolve()),
        (error: unknown) => (settle(), reject(error)),
      )
    })
  }
}
