import type { Sql } from 'postgres'
import { type PollerOptions, type ResolvedOptions, resolveOptions } from './poller-options.js'
import { applicationName, type DatabaseSession, describeTarget } from '../database/connect.js'
import { AnnounceWindow } from './announce-window.js'
import { errorDelayMaxMs, exponentialDelayMs } from './backoff.js'
import { claimQueries } from './claim.js'
import { ClaimFloor } from './claim-floor.js'
import { ClaimPartition } from './claim-partition.js'
import { ClaimTurns } from './claim-turns.js'
import { BatchDispatch } from './dispatch-batch.js'
import { ConfigError } from '../errors.js'
import { HandlerRegistry } from './handler-registry.js'
import { silentLogger } from '../log.js'
import { outboxCheckExists, outboxCheckOrdering } from '../outbox/outbox-checks.js'
import { type OutboxTable, outboxTable } from '../outbox/outbox-table.js'
import { outboxIsPartitioned } from '../outbox/partition-layout.js'
import { PausedTypes } from './paused-types.js'
import { OverlapLane } from './overlap-lane.js'
import { openPollerDatabase, PollerLifecycle } from './poller-lifecycle.js'
import { type BatchResult, BatchRunner } from './run-batch.js'
import { type PollerStats, settleQueries } from './settle.js'
import type { Handler, Logger } from '../types.js'
import { WakeUp } from './wake-up.js'

export type { PollerStats } from './settle.js'

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

/** The poller of one outbox (createPoller without `schemas`). */
export class OutboxPoller implements Poller {
  readonly options: ResolvedOptions
  readonly stats: PollerStats = { batches: 0, processed: 0, failed: 0, dead: 0 }
  readonly done: Promise<void>
  readonly #registry: HandlerRegistry
  readonly #log: Logger
  readonly #outbox: OutboxTable
  readonly #input: PollerOptions
  readonly #batches: BatchRunner
  /** The second batch in flight, when batches overlap (see #open). */
  #second: OverlapLane | undefined
  /** The claims of overlapping batches take turns; undefined with one batch in flight. */
  #turns: ClaimTurns | undefined
  /** The first lane's last settled batch deferred every event: the second lane waits until one goes through. */
  #outage = false
  /** Shared by the overlapping batches' runners: a rollback of either resets it. */
  readonly #floor = new ClaimFloor()
  /** Which partition the claims read, shared by the overlapping batches' runners as the floor is (see #open). */
  readonly #partition: ClaimPartition
  readonly #wakeUp: WakeUp
  readonly #paused: PausedTypes
  readonly #connectionString: string | undefined
  readonly #listenUrl: string | undefined
  readonly #applicationName: string
  #sql: Sql | undefined
  /** The second lane's claim connection. */
  #secondSql: Sql | undefined
  /**
   * The LISTEN pool, on `listenUrl` when given: its own pool even on the same URL, because postgres.js counts
   * reconnect failures per pool, and a LISTEN retrying through an outage must not slow the claims' reconnects.
   */
  #listenSql: Sql | undefined
  #lastLoopAt = 0
  readonly #lifecycle: PollerLifecycle

  constructor(input: PollerOptions) {
    const options = (this.options = resolveOptions(input))
    if (!input.connectionString) throw new ConfigError('connectionString is required (e.g. DATABASE_URL)')
    this.#connectionString = input.connectionString
    this.#listenUrl = input.listenUrl
    this.#applicationName = input.applicationName ?? applicationName('worker')
    this.#registry = new HandlerRegistry(input.handlers)
    this.#log = input.logger ?? silentLogger
    this.#outbox = outboxTable(options.schema, options.table)
    this.#wakeUp = new WakeUp(this.#outbox)
    this.#paused = new PausedTypes(this.#outbox, options.intervalMaxMs)
    this.#input = input
    this.#partition = new ClaimPartition(this.#outbox, (partition) => claimQueries(this.#outbox, { ordering: 'none', onDead: options.orderingOnDead }, options, partition))
    this.#batches = this.#batchRunner(0)
    this.#lifecycle = new PollerLifecycle({
      force: () => {
        this.#batches.force()
        this.#second?.force()
      },
      // asked on stop only: the first lane's sleep ends, and the second lane claims no more
      wake: () => {
        this.#wakeUp.wake()
        this.#second?.stop()
      },
      close: () => this.#close(),
      stopped: () => this.#log.info(this.stats, 'poller stopped'),
    })
    this.done = this.#lifecycle.done
  }

  /** A runner of the outbox's batches; lane 1 is the second batch in flight, so tagged in what the hooks see. */
  #batchRunner(lane: 0 | 1): BatchRunner {
    const options = this.options
    const { beforeDispatch: hook, afterBatch } = this.#input
    return new BatchRunner({
      outbox: this.#outbox,
      claimQueries: claimQueries(this.#outbox, { ordering: options.ordering, onDead: options.orderingOnDead }, options),
      settleQueries: settleQueries(this.#outbox),
      policy: { unmatched: options.unmatched, holdMs: options.intervalMaxMs, retryDelayMs: options.retryDelayMs, retryDelayMaxMs: options.retryDelayMaxMs },
      batchSize: options.batchSize,
      batchMaxBytes: options.batchMaxBytes,
      maxAttempts: options.maxAttempts,
      dispatch: new BatchDispatch(this.#registry, { concurrency: options.concurrency, handlerTimeoutMs: options.handlerTimeoutMs, log: this.#log, txMode: options.txMode }),
      announcer: hook && new AnnounceWindow(lane === 0 ? hook : (ids, finished) => hook(ids, finished, lane), options.concurrency),
      afterBatch: afterBatch && (lane === 0 ? afterBatch : (report) => afterBatch({ ...report, lane })),
      paused: this.#paused,
      stats: this.stats,
      log: this.#log,
      floor: this.#floor,
      partition: this.#partition,
    })
  }

  get lastLoopAt(): number {
    return this.#lastLoopAt
  }

  on(pattern: string, handler: Handler): this {
    this.#registry.add(pattern, handler)
    return this
  }

  start(): Promise<void> {
    return this.#lifecycle.start(() => this.#open(), () => this.#loop())
  }

  async #open(): Promise<void> {
    if (this.#registry.size === 0) throw new ConfigError('no handlers registered: pass handlers or call poller.on(pattern, handler) before start()')
    // One connection: BEGIN, the claim, the settlement and COMMIT are pipelined on it.
    const { sql, session } = await this.#connect(this.#connectionString!, () => this.#batches.connectionClosed())
    this.#sql = sql
    await outboxCheckExists(sql, this.#outbox, { current: true })
    await outboxCheckOrdering(sql, this.#outbox, { ordering: this.options.ordering, onDead: this.options.orderingOnDead })
    // an ordered claim's head probes read every partition: reading one partition saves it nothing
    if (this.options.ordering === 'none' && (await outboxIsPartitioned(sql, this.#outbox))) this.#partition.enable()
    // Every handler a sink that overlaps (Redis, RabbitMQ): a batch runs no code of the user's, only publishes, and the next batch may be
    // claimed while its confirms are outstanding, on a second connection in its own transaction.
    if (this.options.overlap && this.#registry.overlapsBatches) {
      const batches = this.#batchRunner(1)
      const second = await this.#connect(this.#connectionString!, () => batches.connectionClosed())
      this.#secondSql = second.sql
      this.#turns = new ClaimTurns()
      this.#second = new OverlapLane(batches, second.sql, this.#turns, this.options.intervalMinMs, () => this.#wakeUp.wake())
    }
    await this.#listen(sql, session)
    this.#log.info({ outbox: `${this.options.schema}.${this.options.table}`, target: describeTarget(this.#connectionString!), options: this.options }, 'poller started')
  }

  #connect(url: string, onclose?: () => void): Promise<{ sql: Sql; session: DatabaseSession }> {
    return openPollerDatabase(url, { applicationName: this.#applicationName, connectTimeoutMs: this.options.connectTimeoutMs, log: this.#log }, onclose)
  }

  /** Listens for wake-ups (on `listenUrl` when given), unless told not to or LISTEN turns out not to work. */
  async #listen(sql: Sql, session: DatabaseSession): Promise<void> {
    const waitMs = this.options.intervalMaxMs
    if (session.pooled) this.#log.info('connected through a connection pooler: no named prepared statements, no server keepalive settings (set the pooler\'s)')
    if (!this.options.listen) return this.#log.info({ interval_max_ms: waitMs }, 'not listening for NOTIFY: polling, a new event waits at most the longest poll interval')
    const listener = (this.#listenSql = (await this.#connect(this.#listenUrl ?? this.#connectionString!)).sql)
    if (await this.#wakeUp.listen(listener, sql, (payload) => this.#paused.notified(payload))) return
    this.#log.warn(
      { interval_max_ms: waitMs },
      'NOTIFY does not reach this poller (its LISTEN connection goes through a pooler in transaction mode): polling instead, a new event waits up to the longest poll interval; give LISTEN a direct connection (--listen-url) or say so (--no-listen)',
    )
  }

  stop(options: { force?: boolean; timeoutMs?: number } = {}): Promise<void> {
    return this.#lifecycle.stop(options, this.options.drainTimeoutMs)
  }

  async #close(): Promise<void> {
    if (this.#sql !== undefined) await this.#wakeUp.lower(this.#sql)
    await this.#wakeUp.unlisten()
    await this.#listenSql?.end({ timeout: 5 })
    await this.#secondSql?.end({ timeout: 5 })
    await this.#sql?.end({ timeout: 5 })
  }

  /** The first lane's loop, and the second lane's beside it when batches overlap. */
  async #loop(): Promise<void> {
    await Promise.all([this.#firstLoop(), this.#second?.run()])
  }

  /** Claim → dispatch → settle, again at once after a batch with events; back off while empty or failing. */
  async #firstLoop(): Promise<void> {
    const sql = this.#sql!
    const { intervalMinMs, intervalMaxMs } = this.options
    let idleSteps = 0
    let errorSteps = 0
    let deferrals = 0
    while (!this.#lifecycle.stopRequested) {
      let batch: BatchResult
      try {
        batch = await this.#runBatch(sql, deferrals)
        this.#lastLoopAt = Date.now()
        errorSteps = 0
      } catch (error) {
        const delayMs = exponentialDelayMs(++errorSteps, intervalMinMs, errorDelayMaxMs)
        await this.#batches.recover(sql, error, delayMs)
        await this.#sleep(delayMs)
        continue
      }
      if (batch.deferred !== undefined) deferrals = batch.deferred === 'none' ? 0 : deferrals + 1
      // a claim that skipped the suspects came back empty: the next one may take a suspect at once
      if (batch.claimed === 0 && batch.skippedSuspects) continue
      // every event of the batch had to wait: do not churn through the backlog while the outage lasts
      if (batch.deferred === 'all') await this.#sleep(batch.deferMs)
      else if (batch.claimed > 0) {
        idleSteps = 0
        if (this.#wakeUp.raised) await this.#wakeUp.lower(sql)
      } else if (this.#wakeUp.listening && !this.#wakeUp.raised) {
        // raised, then look once more: an event committed just before the flag was seen never notified
        await this.#wakeUp.raise(sql)
      } else await this.#sleep(exponentialDelayMs(++idleSteps, intervalMinMs, intervalMaxMs))
    }
  }

  /**
   * One batch of the first lane. With overlap, its claim takes its turn, and a claim that took events sets the
   * second lane going, unless the batch before deferred all of its events (an outage: this lane alone probes).
   */
  async #runBatch(sql: Sql, deferrals: number): Promise<BatchResult> {
    if (this.#turns === undefined) return this.#batches.run(sql, deferrals)
    const endTurn = await this.#turns.take()
    try {
      const batch = await this.#batches.run(sql, deferrals, (events) => {
        endTurn()
        if (events > 0 && !this.#outage) this.#second?.busy()
      })
      if (batch.deferred !== undefined) this.#outage = batch.deferred === 'all'
      return batch
    } finally {
      endTurn()
    }
  }

  #sleep(ms: number): Promise<void> {
    return this.#lifecycle.stopRequested ? Promise.resolve() : this.#wakeUp.sleep(ms)
  }
}
