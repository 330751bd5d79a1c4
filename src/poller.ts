import type { Sql } from 'postgres'
import { retryDelayMs } from './backoff.js'
import { type PollerOptions, type ResolvedOptions, resolveOptions } from './config.js'
import { applicationName, connect, describeTarget, waitForDatabase } from './db.js'
import { type BatchReport, batchReport, emptyBatchReport } from './batch-report.js'
import type { ClaimedEvent } from './claimed-event.js'
import { BatchDispatch, type BatchOutcome } from './dispatch-batch.js'
import { ConfigError, errorMessage, isConnectionFailure } from './errors.js'
import { HandlerRegistry } from './handler-registry.js'
import { silentLogger } from './log.js'
import { type OutboxTable, outboxTable } from './outbox-table.js'
import {
  type OutboxQueries,
  outboxClaimBatch,
  outboxClearAsleep,
  outboxQueries,
  outboxRollback,
  outboxSetAsleep,
  outboxSettleBatch,
} from './outbox-queries.js'
import type { Handler, Logger } from './types.js'

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
  readonly #hooks: Pick<PollerOptions, 'beforeDispatch' | 'afterBatch'>
  #sql: Sql | undefined
  /** While handlers defer events (a broker is down): how long they step aside, 1 s doubling to 30 s. */
  #outageDelayMs = 0
  #allDeferred = false
  #lastReport: BatchReport | undefined
  #claimedNow = 0
  /** This poller raised the wake-up flag and has not lowered it. */
  #flagRaised = false
  #lastLoopAt = 0
  /** Counts closed connections: a batch whose connection closed under it has lost its transaction. */
  #connectionsClosed = 0
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
    this.#hooks = { beforeDispatch: input.beforeDispatch, afterBatch: input.afterBatch }
    this.#registry = new HandlerRegistry(input.handlers)
    this.#log = input.logger ?? silentLogger
    this.#outbox = outboxTable(this.options.schema, this.options.table)
    this.#queries = outboxQueries(this.#outbox, { ordering: this.options.ordering, onDead: this.options.orderingOnDead })
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
    const sql = (this.#sql = connect(this.#connectionString!, { max: 1, applicationName: this.#applicationName, onclose: () => this.#connectionsClosed++ }))
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

  /** One batch in one transaction. Returns how many events it claimed. */
  async #batch(): Promise<number> {
    const startedAt = performance.now()
    this.#lastReport = undefined
    this.#claimedNow = 0
    try {
      const claimed = await this.#claimAndHandle()
      this.#lastLoopAt = Date.now()
      return claimed
    } finally {
      // a batch that rolled back still reports how many it had claimed, so the supervisor forgets them
      this.#hooks.afterBatch?.(this.#lastReport ?? emptyBatchReport(performance.now() - startedAt, this.#claimedNow))
    }
  }

  async #claimAndHandle(): Promise<number> {
    const startedAt = performance.now()
    const connection = this.#sql!
    const closedBefore = this.#connectionsClosed
    const rows = await outboxClaimBatch(connection, this.#queries, this.options.batchSize)
    this.#claimedNow = rows.length
    if (rows.length === 0) {
      await connection.unsafe('commit')
      return 0
    }
    let outcome: BatchOutcome
    try {
      await this.#hooks.beforeDispatch?.(rows.map((row) => row.id))
      outcome = await this.#dispatch.run(rows, connection)
    } catch (error) {
      await outboxRollback(connection).catch(() => {})
      throw error
    }
    if (this.#connectionsClosed !== closedBefore) {
      // The server already rolled the claim back; settling now would run outside that transaction.
      throw new ConnectionLostError('connection closed while the batch was being handled')
    }
    if (this.#forced) {
      // A forced stop charges no attempt: the whole batch goes back to the queue.
      await outboxRollback(connection)
      this.#log.warn({ events: rows.length }, 'forced stop: batch rolled back, its events return to the queue')
      return rows.length
    }
    const dead = await this.#settle(connection, rows, outcome)
    this.#lastReport = batchReport(rows.length, performance.now() - startedAt, outcome, dead, this.options.unmatched === 'process')
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

  async #recover(error: unknown, delayMs: number): Promise<void> {
    // a claim or settlement that failed without losing the connection leaves its transaction aborted
    if (this.#sql) await outboxRollback(this.#sql).catch(() => {})
    if (isConnectionFailure(error) || error instanceof ConnectionLostError) this.#log.warn({ error: errorMessage(error), retry_in_ms: delayMs }, 'connection lost: the batch in hand rolled back; reconnecting')
    else this.#log.error({ error: errorMessage(error), retry_in_ms: delayMs }, 'batch failed and rolled back')
    await this.#sleep(delayMs)
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

function describeError(error: unknown): string {
  // text columns cannot hold NUL: a message with one would make the whole settlement fail
  const text = (error instanceof Error ? (error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message) : String(error)).replaceAll('\0', '\\0')
  return text.length > 2000 ? `${text.slice(0, 2000)}…` : text
}
