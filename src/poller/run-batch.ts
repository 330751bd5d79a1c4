import type { Sql } from 'postgres'
import type { AnnounceWindow } from './announce-window.js'
import { type BatchReport, batchReport, emptyBatchReport } from './batch-report.js'
import { BatchDeaths } from './batch-deaths.js'
import { type BatchTrace, startBatchTrace } from './batch-trace.js'
import { type ClaimQueries, outboxClaimBatch, outboxClaimShared, outboxRollback } from './claim.js'
import type { ClaimedEvent } from './claimed-event.js'
import { ClaimFloor } from './claim-floor.js'
import { ClaimPartition } from './claim-partition.js'
import { outboxChargeCrash } from './charge-suspects.js'
import type { BatchDispatch, BatchOutcome, SharedRoom } from './dispatch-batch.js'
import { errorMessage, isConnectionFailure, serverReason } from '../errors.js'
import type { OutboxTable } from '../outbox/outbox-table.js'
import type { PausedTypes } from './paused-types.js'
import { countSettled, logDeadLettered, outboxSettleStatements, type PollerStats, type SettleQueries, settleBatch } from './settle.js'
import type { Logger } from '../types.js'
import { type BatchVerdicts, batchVerdicts, type VerdictPolicy } from './verdict.js'

/** What the loop needs to know of a batch. */
export interface BatchResult {
  claimed: number
  /** The claim was not allowed to take a suspect: an empty claim may be tried again at once. */
  skippedSuspects: boolean
  /** Whether handlers deferred some or all of the batch's events; undefined when nothing was settled. */
  deferred: 'none' | 'some' | 'all' | undefined
  /** How long the deferred events step aside (the outage backoff). */
  deferMs: number
}

export interface BatchRunnerOptions {
  outbox: OutboxTable
  claimQueries: ClaimQueries
  settleQueries: SettleQueries
  policy: VerdictPolicy
  batchSize: number
  batchMaxBytes: number
  maxAttempts: number
  dispatch: BatchDispatch
  announcer: AnnounceWindow | undefined
  afterBatch: ((report: BatchReport) => void) | undefined
  /** Claimed events of paused types are parked, not handled (paused-types.ts). */
  paused: PausedTypes
  stats: PollerStats
  log: Logger
  /** Shared by the runners of one outbox whose batches overlap: a rollback of either resets it. */
  floor?: ClaimFloor
  /** On a partitioned outbox, which partition the claims read (shared by the overlapping batches' runners, as `floor`). */
  partition?: ClaimPartition
}

/** Claim → dispatch → settle, one batch in one transaction on the poller's one connection. */
export class BatchRunner {
  readonly #o: BatchRunnerOptions
  readonly #deaths: BatchDeaths
  /** The batch in hand (from its claim to its settlement), and the last one, for recover(). */
  #active: ActiveBatch | undefined
  #lastBatch: ActiveBatch | undefined
  /** Suspects are claimed (alone) at most every other claim, so fresh events never wait behind them. */
  #suspectTurn = true
  #forced = false
  /** Where the claim of fresh events starts, past the dead index entries a held snapshot keeps. */
  readonly #floor: ClaimFloor
  readonly #partition: ClaimPartition

  constructor(options: BatchRunnerOptions) {
    this.#o = options
    this.#floor = options.floor ?? new ClaimFloor()
    this.#partition = options.partition ?? new ClaimPartition(options.outbox, () => options.claimQueries)
    this.#deaths = new BatchDeaths(options.batchSize)
  }

  /**
   * Runs one batch; `deferrals` counts the settled batches in a row before it that deferred events. `claimed` is
   * told how many events the claim took, as soon as it is in (overlapping batches: the next claim may go out).
   */
  async run(connection: Sql, deferrals: number, claimed?: (events: number) => void): Promise<BatchResult> {
    const batch: ActiveBatch = (this.#active = this.#lastBatch = { claimed: 0, bytes: 0, suspect: false, skippedSuspects: !this.#suspectTurn, startedAt: performance.now(), inFlight: [], lost: undefined, trace: undefined })
    let report: BatchReport | undefined
    try {
      const result = await this.#claimAndHandle(connection, batch, deferrals, claimed)
      report = result.report
      return result
    } catch (error) {
      batch.trace?.end(error)
      throw error
    } finally {
      batch.trace?.end()
      this.#active = undefined
      // a batch that rolled back still reports how many it had claimed, so the supervisor forgets them
      this.#o.afterBatch?.(report ?? emptyBatchReport(performance.now() - batch.startedAt, batch.claimed, batch.bytes, false))
    }
  }

  async #claimAndHandle(connection: Sql, batch: ActiveBatch, deferrals: number, claimed: ((events: number) => void) | undefined): Promise<BatchResult & { report: BatchReport | undefined }> {
    // the pauses' re-read and the partition's lookup (when due) go out just before BEGIN and the claim: one round trip for all
    const refreshed = this.#o.paused.refresh(connection)
    const located = this.#partition.locate(connection)
    const { fromId, sweep } = this.#floor.next()
    const queries = this.#partition.queries(this.#o.claimQueries, sweep)
    const batchSize = this.#deaths.batchSize
    const claimStartedAt = performance.now()
    const [, , claim] = await Promise.all([refreshed, located, outboxClaimBatch(connection, queries, { batchSize, maxBytes: this.#o.batchMaxBytes, suspects: this.#suspectTurn, fromId })])
    this.#floor.claimed(claim.firstFreshId, sweep, performance.now() - claimStartedAt)
    this.#partition.claimed(queries, claim, batchSize)
    const { events: rows, parked } = await this.#o.paused.park(connection, claim.events)
    Object.assign(batch, { claimed: rows.length, bytes: claim.bytes, suspect: claim.suspect })
    this.#suspectTurn = !claim.suspect
    claimed?.(rows.length)
    if (batch.lost !== undefined) throw batch.lost
    // parked events count as claimed: a batch of only paused events is followed by the next claim at once
    const result = { claimed: rows.length + parked, skippedSuspects: batch.skippedSuspects, deferred: undefined, deferMs: 0, report: undefined }
    if (rows.length === 0) {
      await connection.unsafe('commit')
      return { ...result, report: emptyBatchReport(performance.now() - batch.startedAt, 0, 0, true) }
    }
    const outcome = await this.#dispatch(connection, batch, rows, false)
    // The server already rolled the claim back; settling now would run outside that transaction.
    if (batch.lost !== undefined) throw batch.lost
    if (this.#forced) {
      // A forced stop charges no attempt: the whole batch goes back to the queue.
      await outboxRollback(connection)
      this.#o.log.warn({ events: rows.length }, 'forced stop: batch rolled back, its events return to the queue')
      return result
    }
    if (outcome.stopped !== undefined) throw outcome.stopped
    const verdicts = batchVerdicts(outcome, this.#o.policy, deferrals)
    const dead = await settleBatch(connection, this.#partition.settleQueries(queries, this.#o.settleQueries), verdicts, this.#o.maxAttempts, this.#o.stats, this.#o.log)
    this.#deaths.committed()
    const deferred = verdicts.deferred.length === 0 ? 'none' : verdicts.deferred.length === rows.length ? 'all' : 'some'
    const report = batchReport(rows.length, claim.bytes, performance.now() - batch.startedAt, verdicts, dead, outcome)
    return { ...result, deferred, deferMs: verdicts.deferMs, report }
  }

  /** The batch's handlers, its events announced to the supervisor first where there is one; `flush`: their end too, before returning. */
  async #dispatch(connection: Sql, batch: ActiveBatch, rows: ClaimedEvent[], flush: boolean, room?: SharedRoom): Promise<BatchOutcome & { stopped: Error | undefined }> {
    batch.trace = startBatchTrace(rows, `${this.#o.outbox.schema}.${this.#o.outbox.table}`, batch.startedAt)
    const dispatch = this.#o.dispatch
    const announcer = this.#o.announcer
    const announcements = announcer?.open(rows, (error) => dispatch.abortBatch(new Error(`beforeDispatch failed: ${errorMessage(error)}`, { cause: error })))
    try {
      const outcome = await dispatch.run(rows, connection, announcements, batch.trace, room)
      if (flush) await announcements?.flush()
      return outcome
    } finally {
      if (announcements !== undefined) announcer!.close(announcements)
    }
  }

  /**
   * This outbox's claim in a transaction shared with other outboxes' batches, begun by the caller (see
   * tenants/shared-turn.ts): the pauses' re-read when due, the claim, sent at once, then the parking of paused
   * events. Undefined when the claim locked rows past the byte budget: the caller rolls back (sharedAborted) and
   * gives each outbox a transaction of its own, whose claim frees them. Every part ends with sharedEnd. `most`
   * bounds the batch below its size (the turn's other tenants wait for its end).
   */
  async sharedClaim(connection: Sql, deferrals: number, most = Number.POSITIVE_INFINITY): Promise<SharedBatch | undefined> {
    const batch: ActiveBatch = (this.#active = this.#lastBatch = { claimed: 0, bytes: 0, suspect: false, skippedSuspects: !this.#suspectTurn, startedAt: performance.now(), inFlight: [], lost: undefined, trace: undefined })
    const refreshed = this.#o.paused.refresh(connection)
    const { fromId, sweep } = this.#floor.next()
    const claimStartedAt = performance.now()
    const [, claim] = await Promise.all([refreshed, outboxClaimShared(connection, this.#o.claimQueries, { batchSize: Math.min(this.#deaths.batchSize, most), maxBytes: this.#o.batchMaxBytes, suspects: this.#suspectTurn, fromId })])
    if (claim === undefined) return undefined
    this.#floor.claimed(claim.firstFreshId, sweep, performance.now() - claimStartedAt)
    const { events: rows, parked } = await this.#o.paused.park(connection, claim.events)
    Object.assign(batch, { claimed: rows.length, bytes: claim.bytes, suspect: claim.suspect })
    this.#suspectTurn = !claim.suspect
    return { runner: this, batch, rows, parked, bytes: claim.bytes, deferrals, verdicts: undefined, outcome: undefined }
  }

  /** The shared transaction rolled back before any handler ran: this outbox's claim is undone. */
  sharedAborted(): void {
    this.#floor.reset()
    this.#active = undefined
  }

  /**
   * Runs the handlers of this outbox's part of the shared transaction, announced as a batch of its own (the
   * supervisor charges a crash to the rows of the outboxes whose events were in flight), beside the other parts
   * (`room`: their `ctx.tx()` turns and handler slots), and decides its verdicts. Throws what ends the whole
   * transaction: the connection lost, a forced stop, a failed announcement.
   */
  async sharedDispatch(connection: Sql, part: SharedBatch, room: SharedRoom): Promise<void> {
    const { batch, rows } = part
    if (batch.lost !== undefined) throw batch.lost
    if (this.#forced) throw new Error('poller stopped')
    if (rows.length === 0) return
    // the other tenants' batches run on until the commit: these events must no longer count as in flight
    const outcome = await this.#dispatch(connection, batch, rows, true, room)
    if (batch.lost !== undefined) throw batch.lost
    if (this.#forced) throw new Error('poller stopped')
    if (outcome.stopped !== undefined) throw outcome.stopped
    part.outcome = outcome
    part.verdicts = batchVerdicts(outcome, this.#o.policy, part.deferrals)
  }

  /** This outbox's settlement statements in the shared transaction (see outboxSettleStatements), then `after`'s. */
  sharedSettle(connection: Sql, part: SharedBatch, after: () => Promise<unknown>[]): Promise<ReadonlySet<string>> {
    return outboxSettleStatements(connection, this.#o.settleQueries, part.verdicts!, this.#o.maxAttempts, after)
  }

  /**
   * The shared transaction committed with this outbox's settlement (`dead`: its dead-lettered ids), or this part
   * ended otherwise (`dead` undefined: rolled back, or its settlement undone): counts, reports, and returns what
   * the loop needs to know, as run() does.
   */
  sharedEnd(part: SharedBatch, dead: ReadonlySet<string> | undefined, error?: unknown): BatchResult {
    const { batch, rows, verdicts, outcome } = part
    this.#active = undefined
    batch.trace?.end(error)
    const result: BatchResult = { claimed: rows.length + part.parked, skippedSuspects: batch.skippedSuspects, deferred: undefined, deferMs: 0 }
    let report: BatchReport | undefined
    if (dead !== undefined && verdicts !== undefined && outcome !== undefined) {
      countSettled(verdicts, dead, this.#o.stats, this.#o.log)
      this.#deaths.committed()
      result.deferred = verdicts.deferred.length === 0 ? 'none' : verdicts.deferred.length === rows.length ? 'all' : 'some'
      result.deferMs = verdicts.deferMs
      report = batchReport(rows.length, part.bytes, performance.now() - batch.startedAt, verdicts, dead, outcome)
    } else if (dead !== undefined) {
      report = emptyBatchReport(performance.now() - batch.startedAt, 0, 0, true)
    }
    this.#o.afterBatch?.(report ?? emptyBatchReport(performance.now() - batch.startedAt, batch.claimed, batch.bytes, false))
    return result
  }

  /**
   * The batch's connection closed: its transaction is gone on the server. No further handler of the batch
   * starts and the running ones are aborted, so nothing keeps working on events another replica now claims.
   */
  connectionClosed(): void {
    const batch = this.#active
    if (batch === undefined || batch.lost !== undefined) return
    const error = new ConnectionLostError('the batch connection closed: its transaction rolled back')
    batch.lost = error
    batch.inFlight = this.#o.dispatch.abortBatch(error)
  }

  /** A forced stop was asked for: no batch settles any more. */
  get forced(): boolean {
    return this.#forced
  }

  /** Forced stop: the handlers of the batch in hand are aborted, and it rolls back whole. */
  force(): void {
    if (this.#forced) return
    this.#forced = true
    this.#o.dispatch.abortAll(new Error('poller stopped'))
  }

  /**
   * After a failed claim or batch: roll back, shrink the next batch, charge the events that were running if
   * the batch keeps dying (see BatchDeaths), and log the incident once, with the server's reason when known.
   */
  async recover(connection: Sql, error: unknown, retryInMs: number): Promise<void> {
    const batch = this.#lastBatch
    const lost = batch?.lost !== undefined || isConnectionFailure(error)
    // postgres.js hands the server's FATAL error (why it closed the connection) to the next statement, not to
    // the one it interrupted: this probe reconnects and collects it. A claim or settlement that failed without
    // losing the connection leaves its transaction aborted instead: roll it back.
    const reason = lost ? (serverReason(error) ?? (await connection`select 1`.then(() => undefined, (probe: unknown) => serverReason(probe) ?? errorMessage(probe)))) : serverReason(error)
    if (!lost) await outboxRollback(connection).catch(() => {})
    this.#floor.reset() // the batch's events are claimable again, maybe below the floor
    this.#partition.reset() // and maybe in another partition, or the one read is gone
    const death = batch !== undefined && batch.claimed > 0 ? this.#deaths.died(batch.suspect, batch.inFlight) : undefined
    const fields = { error: errorMessage(error), reason, events: batch?.claimed, in_flight: batch?.inFlight.length, batch_ms: batch && Math.round(performance.now() - batch.startedAt), next_batch_size: this.#deaths.batchSize, retry_in_ms: retryInMs }
    if (lost) this.#o.log.warn(fields, 'connection lost: the batch in hand rolled back; reconnecting')
    else this.#o.log.error(fields, 'batch failed and rolled back')
    if (death !== undefined && death.charge.length > 0) await this.#charge(connection, death.charge, `its batch died (${reason ?? errorMessage(error)}) while this event was being handled`)
  }

  /** Charges an attempt to the events that were running when their batch died, and marks them suspect. */
  async #charge(connection: Sql, ids: string[], error: string): Promise<void> {
    const log = this.#o.log
    try {
      const { charged, dead } = await outboxChargeCrash(connection, this.#o.outbox, ids, error, this.#o.maxAttempts)
      this.#o.stats.dead += dead.length
      log.warn({ suspects: charged.length }, 'the batch keeps dying: charged the events that were running, which are now retried alone')
      for (const event of dead) logDeadLettered(log, { id: event.id, event_type: event.event_type, error }, 'after its batch kept dying while it ran')
    } catch (cause) {
      log.error({ error: errorMessage(cause), events: ids.length }, 'could not charge the events of the dying batch')
    }
  }
}

class ConnectionLostError extends Error {}

/** One outbox's batch in a transaction shared with other outboxes' batches, from its claim to its settlement. */
export interface SharedBatch {
  readonly runner: BatchRunner
  readonly batch: ActiveBatch
  /** The events to handle (paused ones parked). */
  readonly rows: ClaimedEvent[]
  readonly parked: number
  readonly bytes: number
  readonly deferrals: number
  verdicts: BatchVerdicts | undefined
  outcome: BatchOutcome | undefined
}

/** The batch in hand, as the connection-close handler and recover() see it. */
interface ActiveBatch {
  claimed: number
  bytes: number
  /** One suspect event, claimed alone. */
  suspect: boolean
  /** The claim was not allowed to take a suspect. */
  skippedSuspects: boolean
  startedAt: number
  /** Ids of the events whose handlers were running when the batch was lost. */
  inFlight: string[]
  lost: ConnectionLostError | undefined
  /** The batch's spans, while an OpenTelemetry SDK is registered. */
  trace: BatchTrace | undefined
}
