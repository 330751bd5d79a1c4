import { RetryLaterError } from '../errors.js'
import { type BatchCall, BatchHandlerPass, type EventError, worseFailure } from './batch-handler-pass.js'
import type { HandlerRegistry, Route } from './handler-registry.js'
import { abortedByAnother, BatchSavepoint } from './batch-savepoint.js'
import type { ClaimedEvent } from './claimed-event.js'
import type { Sql } from 'postgres'
import type { BatchAnnouncements } from './announce-window.js'
import type { BatchTrace } from './batch-trace.js'
import { EventContext, SavepointTurns } from './handler-context.js'
import type { HandlerSlots } from './handler-slots.js'
import type { Handler, Logger, OutboxEvent } from '../types.js'

export interface DispatchOptions {
  concurrency: number
  handlerTimeoutMs: number
  log: Logger
  /** How handlers share the batch transaction through `ctx.tx()` (see TxMode). Default `event`. */
  txMode?: TxMode
}

/**
 * `event`: each event's handlers write through a savepoint of their own, taking turns on the batch's connection.
 * `batch`: all of a batch's handlers write through one savepoint at the same time (see BatchSavepoint).
 */
export type TxMode = 'event' | 'batch'

/**
 * What the batches of one transaction on one connection share while they run at once (tenants/shared-turn.ts):
 * the `ctx.tx()` turns (one connection: a handler's savepoint must not interleave with another batch's) and the
 * handler slots (`--concurrency` across the batches). The owner settles the turns once every batch ended.
 */
export interface SharedRoom {
  turns: SavepointTurns
  slots: HandlerSlots
}

/** An event that wrote through the batch savepoint: how its first run ended. */
interface HeldEvent {
  index: number
  route: Route
  failure: EventError
  startedMs: number
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

/** One batch's dispatch: which events are running, and whether the batch was stopped. */
interface BatchRun {
  /** Why the batch stopped (connection lost, forced stop, a failed announcement): no further event starts. */
  stopped: Error | undefined
  /** Events whose handlers started and have not all ended, with their contexts. */
  readonly running: Map<string, EventContext>
  /** Batch handlers' calls in flight. */
  readonly calls: Set<BatchCall>
}

/**
 * Runs the handlers of a batch, at most `concurrency` events at a time, so one slow handler does not hold
 * the whole batch's locks for batch × timeout. An event's handlers run one after another; the first
 * failure fails the event (it is retried whole). A failure never touches the other events of the batch.
 * Batch handlers (the sinks) get their events at once instead, beside the per-event handlers (see
 * BatchHandlerPass); an event succeeds when all of its handlers of both kinds did.
 */
export class BatchDispatch {
  #run: BatchRun | undefined
  /** Set by a forced stop: no event of this or a later batch starts. */
  #forced: Error | undefined

  constructor(
    private readonly registry: HandlerRegistry,
    private readonly options: DispatchOptions,
  ) {}

  /**
   * Runs the batch's handlers; `connection` (holding the batch transaction) serves `ctx.tx()`. With
   * `announcements`, an event starts only once announced; with `trace`, each event's handlers run in its span.
   * Resolves with `stopped` set if the batch was stopped. With `room`, the batch runs beside others on the same
   * connection (`--tx-mode event` only): their turns and handler slots are the room's.
   */
  async run(rows: readonly ClaimedEvent[], connection?: Sql, announcements?: BatchAnnouncements, trace?: BatchTrace, room?: SharedRoom): Promise<BatchOutcome & { stopped: Error | undefined }> {
    const shared = room === undefined && connection !== undefined && this.options.txMode === 'batch' ? new BatchSavepoint(connection) : undefined
    const turns = room?.turns ?? (connection === undefined || shared !== undefined ? undefined : new SavepointTurns(connection))
    const slots = room?.slots
    const outcome: BatchOutcome = { succeeded: [], failed: [], unmatched: [], deferred: [], latencyMs: [], handlerMs: new Map() }
    const run: BatchRun = (this.#run = { stopped: this.#forced, running: new Map(), calls: new Set() })
    // the routes are looked up once per batch only when some handler takes the batch at once
    const routes = this.registry.hasBatchForms ? rows.map((row) => this.registry.match(row.event_type)) : undefined
    const pass = routes?.some((route) => route.batch.length > 0) ? new BatchHandlerPass(rows, routes, run, outcome, this.options.handlerTimeoutMs, announcements, trace) : undefined
    /** Events that wrote through the batch savepoint, their outcome not yet recorded. */
    const held: HeldEvent[] = []
    const record = (index: number, failure: EventError, startedMs: number) => {
      const event = rows[index]!
      if (failure === undefined) outcome.succeeded.push(event)
      else if (failure.error instanceof RetryLaterError) outcome.deferred.push(event)
      else outcome.failed.push({ event, error: failure.error })
      trace?.eventSpan(index).end(failure?.error)
      announcements?.finished(event.id)
      let durations = outcome.handlerMs.get(event.event_type)
      if (durations === undefined) outcome.handlerMs.set(event.event_type, (durations = []))
      durations.push(performance.now() - startedMs)
    }
    const done = (index: number, route: Route, ctx: EventContext, failure: EventError, startedMs: number) => {
      run.running.delete(rows[index]!.id)
      // its writes stand or fall with the batch savepoint, and it may run again: still a suspect until then
      if (ctx.wroteInBatch) held.push({ index, route, failure, startedMs })
      else record(index, failure, startedMs)
    }
    /** Ends the event's savepoint (when a handler took one), then records the event. */
    const end = (index: number, route: Route, ctx: EventContext, failure: EventError, startedMs: number): Promise<void> | undefined => {
      // a stopped batch rolls back whole (or has lost its transaction): its savepoints need no statement
      const ending = run.stopped === undefined ? ctx.finish(failure === undefined) : ctx.abandon()
      if (ending === undefined) {
        done(index, route, ctx, failure, startedMs)
        return
      }
      return ending.then(
        () => done(index, route, ctx, failure, startedMs),
        // the savepoint could not be kept: the event's writes are gone with it, so the event fails — or, when an
        // earlier handler's savepoint was in the way (a RetryLaterError), waits with no attempt charged
        (error: unknown) => done(index, route, ctx, error instanceof RetryLaterError ? { error } : (failure ?? { error }), startedMs),
      )
    }
    /** The rest of an event once something had to be awaited: its later handlers, its batch handlers' result, its savepoint. */
    const finishAsync = async (index: number, route: Route, ctx: EventContext, startedMs: number, pending: Promise<void> | undefined, from: number, failure: EventError) => {
      const event = rows[index]!
      const span = trace?.eventSpan(index)
      try {
        if (pending !== undefined) await pending
        for (let i = from; i < route.each.length; i++) {
          const handler = route.each[i]!
          const next = span === undefined ? this.#runOne(handler, event, ctx) : span.run(() => this.#runOne(handler, event, ctx))
          if (next !== undefined) await next
        }
      } catch (error) {
        failure = { error }
      }
      if (pass !== undefined && route.batch.length > 0) {
        const batchResult = pass.resultOf(index)
        failure = worseFailure(failure, batchResult instanceof Promise ? await batchResult : batchResult)
      }
      await end(index, route, ctx, failure, startedMs)
    }
    /** Runs an event's handlers one after another: a promise only once something must be awaited (a synchronous handler costs no microtask). */
    const handle = (index: number, route: Route, source: SavepointTurns | BatchSavepoint | undefined, startedMs: number): Promise<void> | undefined => {
      const event = rows[index]!
      const ctx = new EventContext(event, this.options.log, source)
      const span = trace?.eventSpan(index)
      run.running.set(event.id, ctx)
      let failure: EventError
      try {
        for (let i = 0; i < route.each.length; i++) {
          const handler = route.each[i]!
          const pending = span === undefined ? this.#runOne(handler, event, ctx) : span.run(() => this.#runOne(handler, event, ctx))
          if (pending !== undefined) return finishAsync(index, route, ctx, startedMs, pending, i + 1, undefined)
        }
      } catch (error) {
        failure = { error }
      }
      if (pass !== undefined && route.batch.length > 0) return finishAsync(index, route, ctx, startedMs, undefined, route.each.length, failure)
      return end(index, route, ctx, failure, startedMs)
    }
    let next = 0
    const worker = async () => {
      while (next < rows.length && run.stopped === undefined) {
        const index = next++
        const event = rows[index]!
        const route = routes === undefined ? this.registry.match(event.event_type) : routes[index]!
        if (route.each.length === 0 && route.batch.length > 0) continue // the pass hands it over and records it
        if (announcements !== undefined) {
          const ready = announcements.ready(index)
          if (ready !== undefined) await ready
          if (run.stopped !== undefined) break
        }
        if (route.each.length === 0) {
          outcome.unmatched.push(event)
          announcements?.finished(event.id)
          continue
        }
        const slot = slots?.take()
        if (slot !== undefined) {
          await slot
          if (run.stopped !== undefined) {
            slots!.give()
            break
          }
        }
        if (route.batch.length === 0) outcome.latencyMs.push(Date.now() - event.created_at.getTime())
        try {
          const handling = handle(index, route, shared ?? turns, performance.now())
          if (handling !== undefined) await handling
        } finally {
          slots?.give()
        }
      }
    }
    const workers: Promise<void>[] = pass === undefined ? [] : [pass.handOver()]
    for (let i = 0; i < Math.min(this.options.concurrency, rows.length); i++) workers.push(worker())
    try {
      await Promise.all(workers)
      // a stopped batch rolls back whole: its savepoints need no statement
      if (turns !== undefined && run.stopped === undefined && room === undefined) await turns.settle()
      if (shared?.taken && run.stopped === undefined) await this.#settleShared(shared, held, run, record, handle)
    } finally {
      if (this.#run === run) this.#run = undefined
    }
    return { ...outcome, stopped: run.stopped }
  }

  /**
   * Keeps the batch savepoint if every event that wrote through it succeeded. Otherwise rolls it back and runs
   * those events again, one savepoint each as in `--tx-mode event`, so a failure fails only its own event: the
   * second run decides. An event that failed on its own (not because another's statement had aborted the
   * transaction) is not run again: its failure stands, and its writes are gone with the savepoint.
   */
  async #settleShared(shared: BatchSavepoint, held: HeldEvent[], run: BatchRun, record: (index: number, failure: EventError, startedMs: number) => void, handle: (index: number, route: Route, source: SavepointTurns, startedMs: number) => Promise<void> | undefined): Promise<void> {
    if (held.every((event) => event.failure === undefined) && (await shared.release())) {
      for (const event of held) record(event.index, undefined, event.startedMs)
      return
    }
    await shared.rollBack()
    const again: HeldEvent[] = []
    for (const event of held) {
      if (event.failure === undefined || abortedByAnother(event.failure.error)) again.push(event)
      else record(event.index, event.failure, event.startedMs)
    }
    this.options.log.info({ events: again.length }, 'a handler failed in the batch savepoint: its writes rolled back, the others run again one savepoint each')
    const turns = new SavepointTurns(shared.connection)
    let next = 0
    const worker = async () => {
      while (next < again.length && run.stopped === undefined) {
        const { index, route } = again[next++]!
        const handling = handle(index, route, turns, performance.now())
        if (handling !== undefined) await handling
      }
    }
    await Promise.all(Array.from({ length: Math.min(this.options.concurrency, again.length) }, worker))
    if (run.stopped === undefined) await turns.settle()
  }

  /**
   * Stops the batch in hand: no further event of it starts, and the handlers still running fail with
   * `reason` (their signals abort). Returns the ids of the events that were running.
   */
  abortBatch(reason: Error): string[] {
    const run = this.#run
    if (run === undefined) return []
    run.stopped ??= reason
    for (const ctx of run.running.values()) {
      ctx.fail(reason)
      ctx.abort(reason)
    }
    const ids = new Set(run.running.keys())
    for (const call of [...run.calls]) {
      for (const id of call.ids) ids.add(id)
      call.fail(reason)
    }
    return [...ids]
  }

  /** Forced shutdown: the batch in hand is aborted, and no later batch starts an event. */
  abortAll(reason: Error): void {
    this.#forced = reason
    this.abortBatch(reason)
  }

  #runOne(handler: Handler, event: OutboxEvent, ctx: EventContext): void | Promise<void> {
    const result = handler(event, ctx)
    // A synchronous handler needs no timer; an async one races its timeout.
    if (result === undefined || typeof (result as Promise<void>).then !== 'function') return
    return new Promise<void>((resolve, reject) => {
      const settle = () => {
        clearTimeout(timer)
        ctx.fail = () => {}
      }
      ctx.fail = (reason) => {
        settle()
        ctx.abort(reason)
        reject(reason)
      }
      const timer = setTimeout(() => ctx.fail(new Error(`handler timed out after ${this.options.handlerTimeoutMs} ms`)), this.options.handlerTimeoutMs)
      result.then(
        () => (settle(), resolve()),
        (error: unknown) => (settle(), reject(error)),
      )
    })
  }
}
