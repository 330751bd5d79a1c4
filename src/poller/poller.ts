import type { Sql } from 'postgres'
import { retryDelayMs } from './backoff.js'
import { type PollerOptions, type ResolvedOptions, resolveOptions } from './poller-options.js'
import { applicationName, connect, describeTarget, waitForDatabase } from '../database/connect.js'
import { AnnounceWindow } from './announce-window.js'
import { type BatchReport, batchReport, emptyBatchReport } from './batch-report.js'
import { BatchDeaths } from './batch-deaths.js'
import type { ClaimedEvent } from './claimed-event.js'
import { BatchDispatch, type BatchOutcome } from './dispatch-batch.js'
import { ConfigError, errorMessage, isConnectionFailure, serverReason } from '../errors.js'
import { HandlerRegistry } from './handler-registry.js'
import { silentLogger } from '../log.js'
import { type OutboxTable, outboxTable } from '../outbox/outbox-table.js'
import {
  type OutboxQueries,
  outboxChargeCrash,
  outboxClaimBatch,
  outboxClearAsleep,
  outboxQueries,
  outboxRollback,
  outboxSetAsleep,
  outboxSettleBatch,
} from './outbox-queries.js'
import type { Handler, Logger } from '../types.js'

/** Counters since start; cheap enough to keep on the hot path. */
export interface PollerStats {
  batches: number
  processed: number
  failed: number
  dead: number
}

export interface Poller {
  readonly options: ResolvedOptions
  readonly stats: Readonly<PollerStats>
  /** Registers a handler for an event-type pattern (`issue.created`, `issue.*`, `*`). */
  on(pattern: string, handler: Handler): this
  /** Connects (retrying an unreachable database for `connectTimeout`), checks the outbox and starts polling. Idempotent. */
  start(): Promise<void>
  /**
   * Stops claiming, lets the batch in hand finish and commit, then closes what the poller opened.
   * Idempotent. `force` (or `timeoutMs` running out) aborts the handlers and rolls the batch back:
   * its events return to the queue with no attempt charged.
   */
  stop(options?: { force?: boolean; timeoutMs?: number }): Promise<void>
  /** Settles when the poller has stopped; rejects if its loop died of an unexpected error. */
  readonly done: Promise<void>
  /** When the loop last finished a claim (empty or not), ms since the epoch; 0 before the first. */
  readonly lastLoopAt: number
}

/** Creates a poller. Nothing connects until `start()`. */
export function createPoller(options: PollerOptions): Poller {
  return new OutboxPoller(options)
}

class OutboxPoller implements Poller {
  readonly options: ResolvedOptions
  readonly stats: PollerStats = { batches: 0, processed: 0, failed: 0, dead: 0 }
  readonly done: Promise<void>
  readonly #registry: HandlerRegistry
  readonly #log: Logger
  readonly #outbox: OutboxTable
  readonly #queries: OutboxQueries
  readonly #dispatch: BatchDispatch
  readonly #connectionString: string | undefined
  readonly #applicationName: string
  readonly #afterBatch: PollerOptions['afterBatch']
  readonly #announcer: AnnounceWindow | undefined
  readonly #deaths: BatchDeaths
  #sql: Sql | undefined
  /** While handlers defer events (a broker is down): how long they step aside, 1 s doubling to 30 s. */
  #outageDelayMs = 0
  #allDeferred = false
  #lastReport: BatchReport | undefined
  /** The batch in hand (from its claim to its settlement), and the last one, for #recover. */
  #active: ActiveBatch | undefined
  #lastBatch: ActiveBatch | undefined
  /** Suspects are claimed (alone) at most every other claim, so fresh events never wait behind them. */
  #suspectTurn = true
  /** This poller raised the wake-up flag and has not lowered it. */
  #flagRaised = false
  #lastLoopAt = 0
  #unlisten: (() => Promise<void>) | undefined
  #starting: Promise<void> | undefined
  #stopping: Promise<void> | undefined
  #stopRequested = false
  #forced = false
  #wake: () => void = () => (this.#wakePending = true)
  /** A NOTIFY that came while the poller was busy: the next sleep returns at once instead of missing it. */
  #wakePending = false
  #resolveDone!: () => void
  #rejectDone!: (error: unknown) => void

  constructor(input: PollerOptions) {
    this.options = resolveOptions(input)
    if (!input.connectionString) throw new ConfigError('connectionString is required (e.g. DATABASE_URL)')
    this.#connectionString = input.connectionString
    this.#applicationName = input.applicationName ?? applicationName('worker')
    this.#afterBatch = input.afterBatch
    this.#announcer = input.beforeDispatch && new AnnounceWindow(input.beforeDispatch, this.options.concurrency)
    this.#deaths = new BatchDeaths(this.options.batchSize)
    this.#registry = new HandlerRegistry(input.handlers)
    this.#log = input.logger ?? silentLogger
    this.#outbox = outboxTable(this.options.schema, this.options.table)
    this.#queries = outboxQueries(this.#outbox, { ordering: this.options.ordering, onDead: this.options.orderingOnDead }, this.options)
    this.#dispatch = new BatchDispatch(this.#registry, { concurrency: this.options.concurrency, handlerTimeoutMs: this.options.handlerTimeoutMs, log: this.#log })
    this.done = new Promise((resolve, reject) => {
      this.#resolveDone = resolve
      this.#rejectDone = reject
    })
    this.done.catch(() => {}) // observed through start()/stop() callers; never an unhandled rejection
  }

  get lastLoopAt(): number {
    return this.#lastLoopAt
  }

  on(pattern: string, handler: Handler): this {
    this.#registry.add(pattern, handler)
    return this
  }

  start(): Promise<void> {
    return (this.#starting ??= this.#start())
  }

  async #start(): Promise<void> {
    if (this.#registry.size === 0) throw new ConfigError('no handlers registered: pass handlers or call poller.on(pattern, handler) before start()')
    // One connection: BEGIN, the claim, the settlement and COMMIT are pipelined on it.
    const sql = (this.#sql = connect(this.#connectionString!, { max: 1, applicationName: this.#applicationName, onclose: () => this.#onConnectionClosed() }))
    const target = describeTarget(this.#connectionString!)
    try {
      await waitForDatabase(sql, target, this.options.connectTimeoutMs, (error, delayMs) =>
        this.#log.warn({ target, error: errorMessage(error), retry_in_ms: delayMs }, 'database unreachable, retrying'),
      )
      await this.#checkOutbox(sql)
      const listener = await sql.listen(this.#outbox.channel, () => this.#wake())
      this.#unlisten = listener.unlisten
    } catch (error) {
      await this.#close()
      this.#resolveDone() // nothing runs: a later stop() returns at once
      throw error
    }
    this.#log.info({ outbox: `${this.options.schema}.${this.options.table}`, target, options: this.options }, 'poller started')
    this.#loop().then(this.#resolveDone, this.#rejectDone)
  }

  async #checkOutbox(sql: Sql): Promise<void> {
    const [row] = await sql`select to_regclass(${this.#outbox.qualified}) is not null as exists, to_regclass(${this.#outbox.settings}) is not null as current`
    if (!row!.exists) throw new ConfigError(`outbox table ${this.#outbox.qualified} does not exist: run \`outbox-poller migrate\` first`)
    if (!row!.current) throw new ConfigError(`outbox table ${this.#outbox.qualified} needs newer migrations: run \`outbox-poller migrate\` first`)
    await this.#checkOrdering(sql)
  }

  /** The ordering mode is the outbox's: the first replica records it, and one started with another refuses. */
  async #checkOrdering(sql: Sql): Promise<void> {
    const mine = this.options.ordering === 'entity' ? `entity, on dead: ${this.options.orderingOnDead}` : 'none'
    const [stored] = await sql.unsafe(
      `with recorded as (insert into ${this.#outbox.settings} (name, value) values ('ordering', $1) on conflict (name) do nothing returning value, set_at)
       select value, set_at from recorded union all select value, set_at from ${this.#outbox.settings} where name = 'ordering'`,
      [mine],
    )
    if (stored!.value !== mine) {
      throw new ConfigError(
        `this outbox runs with ordering "${stored!.value}" (recorded ${(stored!.set_at as Date).toISOString()}), but this replica was started with "${mine}": ` +
          `start every replica with the same --ordering and --ordering-on-dead, or, with every replica stopped, DELETE FROM ${this.#outbox.settings} WHERE name = 'ordering'`,
      )
    }
  }

  stop(options: { force?: boolean; timeoutMs?: number } = {}): Promise<void> {
    if (options.force) this.#force()
    this.#stopRequested = true
    this.#wake()
    return (this.#stopping ??= this.#stop(options.timeoutMs ?? this.options.drainTimeoutMs))
  }

  async #stop(timeoutMs: number): Promise<void> {
    if (this.#starting === undefined) return this.#resolveDone()
    await this.#starting.catch(() => {})
    const timer = setTimeout(() => this.#force(), timeoutMs)
    timer.unref()
    try {
      await this.done
    } finally {
      clearTimeout(timer)
      await this.#close()
      this.#log.info(this.stats, 'poller stopped')
    }
  }

  #force(): void {
    if (this.#forced) return
    this.#forced = true
    this.#dispatch.abortAll(new Error('poller stopped'))
  }

  async #close(): Promise<void> {
    if (this.#flagRaised) {
      // a stopped poller must not leave writers notifying for nobody
      this.#flagRaised = false
      await outboxClearAsleep(this.#sql!, this.#queries).catch(() => {})
    }
    await this.#unlisten?.().catch(() => {})
    this.#unlisten = undefined
    await this.#sql?.end({ timeout: 5 })
  }

  /** Claim → dispatch → settle, again at once after a batch with events; back off while empty. */
  async #loop(): Promise<void> {
    let idleDelay = this.options.intervalMinMs
    let errorDelay = this.options.intervalMinMs
    while (!this.#stopRequested) {
      let claimed: number
      try {
        claimed = await this.#batch()
        errorDelay = this.options.intervalMinMs
      } catch (error) {
        await this.#recover(error, errorDelay)
        errorDelay = Math.min(errorDelay * 2, 30_000)
        continue
      }
      // a claim that skipped the suspects came back empty: the next one may take a suspect at once
      if (claimed === 0 && this.#lastBatch!.skippedSuspects) continue
      if (claimed > 0 && this.#outageDelayMs > 0 && this.#allDeferred) {
        // every event of the batch had to wait: do not churn through the backlog while the outage lasts
        await this.#sleep(this.#outageDelayMs)
        continue
      }
      if (claimed > 0) {
        idleDelay = this.options.intervalMinMs
        if (this.#flagRaised) {
          this.#flagRaised = false
          await outboxClearAsleep(this.#sql!, this.#queries).catch(() => {})
        }
        continue
      }
      if (!this.#flagRaised) {
        // Raise the flag, then look once more: an event committed just before the flag was seen never notified.
        this.#flagRaised = true
        await outboxSetAsleep(this.#sql!, this.#queries).catch(() => (this.#flagRaised = false))
        continue
      }
      await this.#sleep(idleDelay)
      idleDelay = Math.min(idleDelay * 2, this.options.intervalMaxMs)
    }
  }

  /**
   * The batch's connection closed: its transaction is gone on the server. No further handler of the batch
   * starts and the running ones are aborted, so nothing keeps working on events another replica now claims.
   */
  #onConnectionClosed(): void {
    const batch = this.#active
    if (batch === undefined || batch.lost !== undefined) return
    const error = new ConnectionLostError('the batch connection closed: its transaction rolled back')
    batch.lost = error
    batch.inFlight = this.#dispatch.abortBatch(error)
  }

  /** One batch in one transaction. Returns how many events it claimed. */
  async #batch(): Promise<number> {
    const startedAt = performance.now()
    this.#lastReport = undefined
    const batch: ActiveBatch = (this.#active = this.#lastBatch = { claimed: 0, bytes: 0, suspect: false, skippedSuspects: !this.#suspectTurn, startedAt, inFlight: [], lost: undefined })
    try {
      const claimed = await this.#claimAndHandle(batch)
      this.#lastLoopAt = Date.now()
      return claimed
    } finally {
      this.#active = undefined
      // a batch that rolled back still reports how many it had claimed, so the supervisor forgets them
      this.#afterBatch?.(this.#lastReport ?? emptyBatchReport(performance.now() - startedAt, batch.claimed, batch.bytes, false))
    }
  }

  async #claimAndHandle(batch: ActiveBatch): Promise<number> {
    const connection = this.#sql!
    const claim = await outboxClaimBatch(connection, this.#queries, { batchSize: this.#deaths.batchSize, maxBytes: this.options.batchMaxBytes, suspects: this.#suspectTurn })
    const rows = claim.events
    Object.assign(batch, { claimed: rows.length, bytes: claim.bytes, suspect: claim.suspect })
    this.#suspectTurn = !claim.suspect
    if (batch.lost !== undefined) throw batch.lost
    if (rows.length === 0) {
      await connection.unsafe('commit')
      this.#lastReport = emptyBatchReport(performance.now() - batch.startedAt, 0, 0, true)
      return 0
    }
    const announcements = this.#announcer?.open(rows, (error) => this.#dispatch.abortBatch(new Error(`beforeDispatch failed: ${errorMessage(error)}`, { cause: error })))
    let outcome: BatchOutcome & { stopped: Error | undefined }
    try {
      outcome = await this.#dispatch.run(rows, connection, announcements)
    } finally {
      if (announcements !== undefined) this.#announcer!.close(announcements)
    }
    // The server already rolled the claim back; settling now would run outside that transaction.
    if (batch.lost !== undefined) throw batch.lost
    if (this.#forced) {
      // A forced stop charges no attempt: the whole batch goes back to the queue.
      await outboxRollback(connection)
      this.#log.warn({ events: rows.length }, 'forced stop: batch rolled back, its events return to the queue')
      return rows.length
    }
    if (outcome.stopped !== undefined) throw outcome.stopped
    const dead = await this.#settle(connection, rows, outcome)
    this.#deaths.committed()
    this.#lastReport = batchReport(rows.length, claim.bytes, performance.now() - batch.startedAt, outcome, dead, this.options.unmatched === 'process')
    return rows.length
  }

  /** Settles every event of the batch and commits. Returns the ids that were dead-lettered. */
  async #settle(connection: Sql, rows: ClaimedEvent[], outcome: BatchOutcome): Promise<readonly string[]> {
    const hold = this.options.unmatched === 'hold'
    const processed = outcome.succeeded.map((event) => event.id)
    if (!hold) for (const event of outcome.unmatched) processed.push(event.id)
    const failed = outcome.failed.map(({ event, error }) => ({
      id: event.id,
      error: describeError(error),
      delayMs: retryDelayMs(event.attempt, this.options.retryDelayMs, this.options.retryDelayMaxMs),
    }))
    // Unmatched events under --unmatched hold step aside for --interval-max; deferred ones for the outage backoff.
    const held = hold ? outcome.unmatched.map((event) => event.id) : []
    const deferred = outcome.deferred.map((event) => event.id)
    this.#outageDelayMs = deferred.length === 0 ? 0 : Math.min(Math.max(this.#outageDelayMs * 2, 1000), 30_000)
    const dead = await outboxSettleBatch(connection, this.#queries, {
      processed,
      failed,
      held,
      holdMs: this.options.intervalMaxMs,
      deferred,
      deferMs: this.#outageDelayMs,
      maxAttempts: this.options.maxAttempts,
    })
    this.#allDeferred = deferred.length === rows.length
    this.stats.batches++
    this.stats.processed += processed.length
    this.stats.failed += failed.length
    this.stats.dead += dead.length
    this.#log.debug({ claimed: rows.length, processed: processed.length, failed: failed.length, held: held.length, deferred: deferred.length }, 'batch settled')
    for (const { event, error } of outcome.failed) {
      const isDead = dead.includes(event.id)
      const fields = { event_id: event.event_id, id: event.id, event_type: event.event_type, attempt: event.attempt, error: describeError(error) }
      if (isDead) this.#log.error(fields, 'event dead-lettered after its last attempt')
      else this.#log.warn(fields, 'event failed, will retry')
    }
    return dead
  }

  /**
   * After a failed claim or batch: roll back, shrink the next batch, charge the events that were running if
   * the batch keeps dying (see BatchDeaths), and log the incident once, with the server's reason when known.
   */
  async #recover(error: unknown, delayMs: number): Promise<void> {
    const batch = this.#lastBatch
    const lost = batch?.lost !== undefined || isConnectionFailure(error)
    // postgres.js hands the server's FATAL error (why it closed the connection) to the next statement, not to
    // the one it interrupted: this probe reconnects and collects it. A claim or settlement that failed without
    // losing the connection leaves its transaction aborted instead: roll it back.
    const reason = lost ? (serverReason(error) ?? (await this.#sql!`select 1`.then(() => undefined, (probe: unknown) => serverReason(probe) ?? errorMessage(probe)))) : serverReason(error)
    if (!lost) await outboxRollback(this.#sql!).catch(() => {})
    const death = batch !== undefined && batch.claimed > 0 ? this.#deaths.died(batch.suspect, batch.inFlight) : undefined
    const fields = { error: errorMessage(error), reason, events: batch?.claimed, in_flight: batch?.inFlight.length, batch_ms: batch && Math.round(performance.now() - batch.startedAt), next_batch_size: this.#deaths.batchSize, retry_in_ms: delayMs }
    if (lost) this.#log.warn(fields, 'connection lost: the batch in hand rolled back; reconnecting')
    else this.#log.error(fields, 'batch failed and rolled back')
    if (death !== undefined && death.charge.length > 0) await this.#charge(death.charge, `its batch died (${reason ?? errorMessage(error)}) while this event was being handled`)
    await this.#sleep(delayMs)
  }

  /** Charges an attempt to the events that were running when their batch died, and marks them suspect. */
  async #charge(ids: string[], error: string): Promise<void> {
    try {
      const { charged, dead } = await outboxChargeCrash(this.#sql!, this.#queries, ids, error, this.options.maxAttempts)
      this.stats.dead += dead.length
      this.#log.warn({ suspects: charged.length }, 'the batch keeps dying: charged the events that were running, which are now retried alone')
      for (const event of dead) this.#log.error({ id: event.id, event_type: event.event_type, error }, 'event dead-lettered: its batch kept dying while it ran')
    } catch (cause) {
      this.#log.error({ error: errorMessage(cause), events: ids.length }, 'could not charge the events of the dying batch')
    }
  }

  #sleep(ms: number): Promise<void> {
    if (this.#stopRequested || this.#wakePending) {
      this.#wakePending = false
      return Promise.resolve()
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(), ms)
      const done = () => {
        clearTimeout(timer)
        this.#wake = () => (this.#wakePending = true)
        resolve()
      }
      this.#wake = done
    })
  }
}

class ConnectionLostError extends Error {}

/** The batch in hand, as the connection-close handler and #recover see it. */
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
}

function describeError(error: unknown): string {
  // text columns cannot hold NUL: a message with one would make the whole settlement fail
  const text = (error instanceof Error ? (error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message) : String(error)).replaceAll('\0', '\\0')
  return text.length > 2000 ? `${text.slice(0, 2000)}…` : text
}
