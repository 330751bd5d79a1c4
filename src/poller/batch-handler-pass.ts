import { RetryLaterError } from '../errors.js'
import type { BatchAnnouncements } from './announce-window.js'
import type { BatchTrace } from './batch-trace.js'
import type { ClaimedEvent } from './claimed-event.js'
import type { BatchHandler, Route } from './handler-registry.js'
import type { OutboxEvent } from '../types.js'

/** A batch handler's call in flight, as the dispatch stops it. */
export interface BatchCall {
  /** Row ids of the events handed over. */
  readonly ids: readonly string[]
  /** Ends the call now: every event of it fails with `reason`, and its signal aborts. */
  fail(reason: Error): void
}

/** Where the pass records the outcome of an event that has no per-event handler. */
export interface PassOutcome {
  succeeded: OutboxEvent[]
  failed: Array<{ event: OutboxEvent; error: unknown }>
  deferred: OutboxEvent[]
  latencyMs: number[]
  handlerMs: Map<string, number[]>
}

/** What the pass shares with the dispatch of its batch. */
export interface PassRun {
  readonly stopped: Error | undefined
  readonly calls: Set<BatchCall>
}

/** An event's outcome across its batch handlers: undefined when all succeeded. */
export type EventError = { error: unknown } | undefined

/**
 * The batch handlers' part of a batch's dispatch. Each batch handler gets the events it matches in one call
 * (one call per announced window under a supervisor, since an event may start only once announced). An
 * event's outcome across several batch handlers is the first rejection, else the first deferral. Events
 * that have per-event handlers too wait for it with `resultOf`; the others are recorded here.
 */
export class BatchHandlerPass {
  readonly #results = new Map<number, EventError>()
  readonly #waiters = new Map<number, (result: EventError) => void>()
  #done = false

  constructor(
    private readonly rows: readonly ClaimedEvent[],
    private readonly routes: readonly Route[],
    private readonly run: PassRun,
    private readonly outcome: PassOutcome,
    private readonly handlerTimeoutMs: number,
    private readonly announcements: BatchAnnouncements | undefined,
    private readonly trace: BatchTrace | undefined = undefined,
  ) {}

  /** Hands the events over, window by window; resolves once every call ended. */
  async handOver(): Promise<void> {
    const calls: Promise<void>[] = []
    try {
      for (let from = 0; from < this.rows.length && this.run.stopped === undefined; ) {
        let to = this.rows.length
        if (this.announcements !== undefined) {
          const ready = this.announcements.ready(from)
          if (ready !== undefined) {
            await ready
            continue // confirmed now, or the batch stopped
          }
          to = this.announcements.confirmed
        }
        calls.push(this.#callWindow(from, to))
        from = to
      }
      await Promise.all(calls)
    } finally {
      this.#done = true
      // events never handed over (the batch stopped first) fail with the reason it stopped
      const reason = { error: this.run.stopped ?? new Error('the batch stopped before this event was handed over') }
      for (const [index, wake] of this.#waiters) wake(this.#results.get(index) ?? reason)
      this.#waiters.clear()
    }
  }

  /** The outcome of an event that also has per-event handlers, once its batch handlers ended. */
  resultOf(index: number): EventError | Promise<EventError> {
    if (this.#results.has(index)) return this.#results.get(index)
    if (this.#done) return { error: this.run.stopped ?? new Error('the batch stopped before this event was handed over') }
    return new Promise((resolve) => this.#waiters.set(index, resolve))
  }

  async #callWindow(from: number, to: number): Promise<void> {
    const groups = new Map<BatchHandler, number[]>()
    const startedAt = Date.now()
    const startedMs = performance.now()
    for (let index = from; index < to; index++) {
      const route = this.routes[index]!
      if (route.batch.length === 0) continue
      this.outcome.latencyMs.push(startedAt - this.rows[index]!.created_at.getTime())
      this.trace?.eventSpan(index) // started before the call: the sinks put its context in their messages
      for (const handler of route.batch) {
        let indexes = groups.get(handler)
        if (indexes === undefined) groups.set(handler, (indexes = []))
        indexes.push(index)
      }
    }
    const errors = new Map<number, EventError>()
    await Promise.all(
      [...groups].map(async ([handler, indexes]) => {
        const results = await this.#call(handler, indexes.map((index) => this.rows[index]!))
        indexes.forEach((index, i) => {
          const error = results[i]
          if (error !== undefined) errors.set(index, worseFailure(errors.get(index), { error }))
        })
      }),
    )
    const endedMs = performance.now()
    for (let index = from; index < to; index++) {
      const route = this.routes[index]!
      if (route.batch.length === 0) continue
      const result = errors.get(index)
      if (route.each.length > 0) {
        this.#results.set(index, result)
        this.#waiters.get(index)?.(result)
        this.#waiters.delete(index)
        continue
      }
      this.trace?.eventSpan(index).end(result?.error)
      this.#record(this.rows[index]!, result, endedMs - startedMs)
    }
  }

  #record(event: ClaimedEvent, result: EventError, durationMs: number): void {
    const outcome = this.outcome
    if (result === undefined) outcome.succeeded.push(event)
    else if (result.error instanceof RetryLaterError) outcome.deferred.push(event)
    else outcome.failed.push({ event, error: result.error })
    let durations = outcome.handlerMs.get(event.event_type)
    if (durations === undefined) outcome.handlerMs.set(event.event_type, (durations = []))
    durations.push(durationMs)
    this.announcements?.finished(event.id)
  }

  /** One call, bounded by the handler timeout; never rejects: a failure of the call is every event's error. */
  #call(handler: BatchHandler, events: OutboxEvent[]): Promise<ReadonlyArray<unknown>> {
    return new Promise((resolve) => {
      const controller = new AbortController()
      let ended = false
      const end = (results: ReadonlyArray<unknown>) => {
        if (ended) return
        ended = true
        clearTimeout(timer)
        this.run.calls.delete(call)
        resolve(results)
      }
      const call: BatchCall = {
        ids: events.map((event) => event.id),
        fail: (reason) => {
          controller.abort(reason)
          end(events.map(() => reason))
        },
      }
      this.run.calls.add(call)
      const timer = setTimeout(() => call.fail(new Error(`handler timed out after ${this.handlerTimeoutMs} ms`)), this.handlerTimeoutMs)
      try {
        handler(events, controller.signal).then(
          (results) => end(results.length === events.length ? results : events.map(() => new Error(`a batch handler answered ${results.length} results for ${events.length} events`))),
          (error: unknown) => end(events.map(() => error ?? new Error('a batch handler rejected'))),
        )
      } catch (error) {
        end(events.map(() => error ?? new Error('a batch handler threw')))
      }
    })
  }
}

/** The outcome of two handlers of one event: a failure outweighs a success, and a rejection a deferral (it charges the attempt). */
export function worseFailure(current: EventError, next: EventError): EventError {
  if (next === undefined) return current
  if (current === undefined || (current.error instanceof RetryLaterError && !(next.error instanceof RetryLaterError))) return next
  return current
}
