import type { Sql } from 'postgres'
import { applicationName, describeTarget } from '../database/connect.js'
import { ConfigError, errorMessage, isConnectionFailure, SqlState, sqlState } from '../errors.js'
import { silentLogger } from '../log.js'
import { outboxCheckOrdering } from '../outbox/outbox-checks.js'
import { OrderingIndexMissing } from '../outbox/ordering-index.js'
import { errorDelayMaxMs, exponentialDelayMs } from '../poller/backoff.js'
import { emptyBatchReport } from '../poller/batch-report.js'
import { claimQueries, outboxRollback } from '../poller/claim.js'
import { HandlerRegistry } from '../poller/handler-registry.js'
import type { Poller } from '../poller/poller.js'
import { openPollerDatabase, PollerLifecycle } from '../poller/poller-lifecycle.js'
import { type PollerOptions, type ResolvedOptions, resolveOptions } from '../poller/poller-options.js'
import type { BatchResult } from '../poller/run-batch.js'
import type { PollerStats } from '../poller/settle.js'
import { outboxTable } from '../outbox/outbox-table.js'
import type { Handler, Logger } from '../types.js'
import { outboxDiscoverSchemas } from './discover-tenants.js'
import { outboxProbeTenants, probeChunk } from './probe-tenants.js'
import { TenantListener } from './tenant-listener.js'
import { TenantOutbox, type TenantShared } from './tenant-outbox.js'
import { TenantRotation } from './tenant-rotation.js'
import { sharedTurn, sharedTurnMax, type SharedTurnOptions } from './shared-turn.js'

/** A claim connection and the tenants whose batches it holds now. */
interface Slot {
  sql: Sql
  tenants: readonly TenantOutbox[]
}

/** What a tenant's turn leads to (see TenantRotation.done). */
type Turn = { again: true } | { idleUntil: number }
const again: Turn = { again: true }

/** Tenants the poller sees but does not serve, and why (said once in the log, and in `tenants`). */
export type TenantProblem = 'no outbox' | 'not migrated' | 'ordering differs' | 'ordering indexes missing'

/**
 * A poller for every outbox of the schemas matching `schemas`: `tenantConcurrency` claim connections and one
 * LISTEN connection, however many tenants. Claims rotate fairly over the outboxes that have work
 * (tenant-rotation.ts); each tenant's batch runs exactly as a single-outbox poller's does (tenant-outbox.ts).
 * Schemas are discovered again every `discoverInterval`: new ones are served, dropped ones let go.
 */
export class TenantPoller implements Poller {
  readonly options: ResolvedOptions
  readonly stats: PollerStats = { batches: 0, processed: 0, failed: 0, dead: 0 }
  readonly done: Promise<void>
  readonly #registry: HandlerRegistry
  readonly #log: Logger
  readonly #shared: TenantShared
  readonly #connectionString: string
  readonly #listenUrl: string | undefined
  readonly #applicationName: string
  readonly #tenants = new Map<string, TenantOutbox>()
  readonly #rotation = new TenantRotation<TenantOutbox>()
  readonly #listener: TenantListener
  /** Schemas seen but not served, with why; each is logged when it first appears so. */
  readonly #problems = new Map<string, TenantProblem>()
  readonly #sleepers = new Set<() => void>()
  #slots: Slot[] = []
  #listenSql: Sql | undefined
  #discoveredAt = Number.NEGATIVE_INFINITY
  #discovering: Promise<void> | undefined
  #probedAt = performance.now()
  #probing: Promise<void> | undefined
  /** The idle tenants the safety poll under way has yet to look at: one statement's worth between turns (see #probe). */
  #unprobed: TenantOutbox[] = []
  #lastLoopAt = 0
  readonly #lifecycle: PollerLifecycle
  /** How the shared turns run (shared-turn.ts). */
  readonly #turnOptions: SharedTurnOptions

  constructor(input: PollerOptions) {
    const options = (this.options = resolveOptions(input))
    if (options.schemas === undefined) throw new ConfigError('schemas is required for a multi-tenant poller')
    if (!input.connectionString) throw new ConfigError('connectionString is required (e.g. DATABASE_URL)')
    this.#connectionString = input.connectionString
    this.#listenUrl = input.listenUrl
    this.#applicationName = input.applicationName ?? applicationName('worker')
    this.#registry = new HandlerRegistry(input.handlers)
    this.#log = input.logger ?? silentLogger
    this.#shared = { options, registry: this.#registry, stats: this.stats, log: this.#log, beforeDispatch: input.beforeDispatch, afterBatch: input.afterBatch }
    // every tenant's batch transaction begins alike
    const statements = claimQueries(outboxTable('public', options.table), { ordering: options.ordering, onDead: options.orderingOnDead }, options)
    this.#turnOptions = { statements, concurrency: options.concurrency, idleInTransactionMs: options.idleInTransactionTimeoutMs, oneAfterAnother: input.beforeDispatch !== undefined, log: this.#log }
    this.#listener = new TenantListener((schema, payload) => this.#notified(schema, payload))
    this.#lifecycle = new PollerLifecycle({
      force: () => this.#force(),
      wake: () => this.#wakeSleepers(),
      close: () => this.#close(),
      stopped: () => this.#log.info({ ...this.stats, tenants: this.#tenants.size }, 'poller stopped'),
    })
    this.done = this.#lifecycle.done
  }

  get lastLoopAt(): number {
    return this.#lastLoopAt
  }

  /** The schemas served now, and those matching but not served, with why. */
  tenants(): { served: string[]; problems: Map<string, TenantProblem> } {
    return { served: [...this.#tenants.keys()], problems: new Map(this.#problems) }
  }

  on(pattern: string, handler: Handler): this {
    this.#registry.add(pattern, handler)
    return this
  }

  start(): Promise<void> {
    return this.#lifecycle.start(() => this.#open(), async () => void (await Promise.all(this.#slots.map((slot) => this.#slotLoop(slot)))))
  }

  async #open(): Promise<void> {
    if (this.#registry.size === 0) throw new ConfigError('no handlers registered: pass handlers or call poller.on(pattern, handler) before start()')
    for (let i = 0; i < this.options.tenantConcurrency; i++) {
      const slot: Slot = { sql: undefined!, tenants: [] }
      slot.sql = (await this.#connect(this.#connectionString, () => {
        for (const tenant of slot.tenants) tenant.runner.connectionClosed()
      })).sql
      this.#slots.push(slot)
    }
    await this.#listen()
    await this.#discover(this.#slots[0]!.sql)
    this.#log.info({ schemas: this.options.schemas, table: this.options.table, tenants: this.#tenants.size, target: describeTarget(this.#connectionString), options: this.options }, 'poller started')
  }

  #connect(url: string, onclose?: () => void) {
    return openPollerDatabase(url, { applicationName: this.#applicationName, connectTimeoutMs: this.options.connectTimeoutMs, log: this.#log }, onclose)
  }

  async #listen(): Promise<void> {
    const waitMs = this.options.intervalMaxMs
    if (!this.options.listen) return this.#log.info({ interval_max_ms: waitMs }, 'not listening for NOTIFY: polling every outbox, a new event waits at most the longest poll interval')
    const sql = this.#slots[0]!.sql
    // its own pool even on the same URL (see Poller's listenSql): an outage's LISTEN retries never delay a claim
    const listener = (this.#listenSql = (await this.#connect(this.#listenUrl ?? this.#connectionString)).sql)
    if (await this.#listener.start(listener, sql)) return
    this.#log.warn({ interval_max_ms: waitMs }, 'NOTIFY does not reach this poller (its LISTEN connection goes through a pooler in transaction mode): polling every outbox instead; give LISTEN a direct connection (--listen-url) or say so (--no-listen)')
  }

  /** Serves the schemas that newly match, lets go of those gone; a schema without a (current) outbox is skipped, said once. */
  async #discover(sql: Sql): Promise<void> {
    this.#discoveredAt = performance.now()
    const found = await outboxDiscoverSchemas(sql, this.options.schemas!, this.options.table)
    const seen = new Set<string>()
    let added = 0
    for (const { schema, hasOutbox, current } of found) {
      seen.add(schema)
      if (this.#tenants.has(schema) || this.#lifecycle.stopRequested) continue
      if (!hasOutbox || !current) {
        this.#problem(schema, hasOutbox ? 'not migrated' : 'no outbox', `schema ${schema} matches but ${hasOutbox ? 'its outbox needs newer migrations' : `has no outbox table ${this.options.table} (yet)`}: skipped until \`outbox-poller migrate --schemas\` gives it one`)
        continue
      }
      if (await this.#serve(sql, schema)) added++
    }
    let removed = 0
    for (const [schema, tenant] of this.#tenants) {
      if (seen.has(schema)) continue
      this.#letGo(tenant, 'its schema no longer exists or no longer matches')
      removed++
    }
    for (const schema of this.#problems.keys()) if (!seen.has(schema)) this.#problems.delete(schema)
    if (added > 0 || removed > 0) this.#log.info({ tenants: this.#tenants.size, added, removed, not_served: this.#problems.size }, 'tenants discovered')
    this.#wakeSleepers()
  }

  /** Checks the tenant's recorded ordering mode, listens on its channel, and gives it a turn. */
  async #serve(sql: Sql, schema: string): Promise<boolean> {
    const tenant = new TenantOutbox(schema, this.#shared)
    try {
      await outboxCheckOrdering(sql, tenant.outbox, { ordering: this.options.ordering, onDead: this.options.orderingOnDead }, `--schema ${schemaArgument(schema)}`)
    } catch (error) {
      if (isOutboxGone(error)) return false // dropped since the discovery query: the next one forgets it
      if (!(error instanceof ConfigError)) throw error
      this.#problem(schema, error instanceof OrderingIndexMissing ? 'ordering indexes missing' : 'ordering differs', `tenant not served: ${error.message}`)
      return false
    }
    this.#problems.delete(schema)
    await this.#listener.add(schema, tenant.outbox.channel)
    this.#tenants.set(schema, tenant)
    this.#rotation.add(tenant)
    return true
  }

  #problem(schema: string, problem: TenantProblem, message: string): void {
    if (this.#problems.get(schema) === problem) return
    this.#problems.set(schema, problem)
    this.#log.warn({ schema, problem }, message)
  }

  /** Stops serving a tenant quietly: one line, no error (a tenant being deleted is no incident). */
  #letGo(tenant: TenantOutbox, why: string): void {
    if (tenant.gone) return
    tenant.gone = true
    this.#tenants.delete(tenant.schema)
    this.#rotation.remove(tenant)
    void this.#listener.remove(tenant.schema, tenant.outbox.channel)
    this.#log.info({ schema: tenant.schema }, `tenant let go: ${why}`)
  }

  #notified(schema: string, payload: string): void {
    const tenant = this.#tenants.get(schema)
    if (tenant === undefined) return
    tenant.paused.notified(payload)
    if (this.#rotation.wake(tenant)) this.#wakeSleepers()
  }

  stop(options: { force?: boolean; timeoutMs?: number } = {}): Promise<void> {
    return this.#lifecycle.stop(options, this.options.drainTimeoutMs)
  }

  #force(): void {
    for (const slot of this.#slots) for (const tenant of slot.tenants) tenant.runner.force()
    for (const tenant of this.#tenants.values()) tenant.runner.force()
  }

  async #close(): Promise<void> {
    const sql = this.#slots[0]?.sql
    // writers must not keep notifying for nobody
    if (sql !== undefined) await Promise.all([...this.#tenants.values()].map((tenant) => tenant.wakeUp.lower(sql)))
    await this.#listener.close()
    await this.#listenSql?.end({ timeout: 5 })
    await Promise.all(this.#slots.map((slot) => slot.sql.end({ timeout: 5 })))
  }

  /** One claim connection's loop: the next tenant in the rotation, one batch, its next turn; discovery when due. */
  async #slotLoop(slot: Slot): Promise<void> {
    while (!this.#lifecycle.stopRequested) {
      if (this.#discovering === undefined && performance.now() - this.#discoveredAt >= this.options.discoverIntervalMs) {
        await (this.#discovering = this.#discover(slot.sql)
          .catch((error: unknown) => this.#log.warn({ error: errorMessage(error) }, 'could not look for new tenants: trying again at the next discovery'))
          .finally(() => (this.#discovering = undefined)))
      }
      if (this.#listener.listening && this.#probing === undefined && (this.#unprobed.length > 0 || performance.now() - this.#probedAt >= this.options.intervalMaxMs)) {
        await (this.#probing = this.#probe(slot.sql)
          .catch((error: unknown) => this.#log.warn({ error: errorMessage(error) }, 'could not look for work in the idle tenants: trying again at the next safety poll'))
          .finally(() => (this.#probing = undefined)))
      }
      // One claim connection: the tenants with work share a transaction (a slow batch holds the others back
      // anyway, the trade of one connection). Several: a tenant each, so a slow batch holds back no other tenant.
      const tenants = this.#rotation.take(performance.now(), this.#slots.length === 1 ? sharedTurnMax : 1)
      if (tenants.length === 0) {
        // the safety poll's next statement at once, unless another slot is sending one (it sends the rest too)
        const probeAt = !this.#listener.listening ? Number.POSITIVE_INFINITY : this.#unprobed.length > 0 && this.#probing === undefined ? 0 : this.#probedAt + this.options.intervalMaxMs
        const until = Math.min(this.#rotation.nextDueAt(), this.#discoveredAt + this.options.discoverIntervalMs, probeAt)
        await this.#sleep(Math.max(1, until - performance.now()))
        continue
      }
      slot.tenants = tenants
      let turns: Turn[]
      try {
        turns = await this.#turns(slot.sql, tenants)
      } finally {
        slot.tenants = []
      }
      for (const [i, tenant] of tenants.entries()) this.#rotation.done(tenant, turns[i]!)
    }
  }

  /**
   * The tenants' batches: one tenant alone in its own transaction; several in one transaction they share
   * (shared-turn.ts), or, when their claims cannot share it, one after another, each in its own.
   */
  async #turns(sql: Sql, tenants: readonly TenantOutbox[]): Promise<Turn[]> {
    if (tenants.length === 1) return [await this.#turn(sql, tenants[0]!)]
    const shared = await sharedTurn(sql, tenants, this.#turnOptions)
    if (shared === undefined) {
      const turns: Turn[] = []
      for (const tenant of tenants) turns.push(await this.#turn(sql, tenant))
      return turns
    }
    const turns: Turn[] = []
    let lost: number | undefined
    for (const outcome of shared) {
      if ('result' in outcome) {
        this.#lastLoopAt = Date.now()
        outcome.tenant.errorSteps = 0
        // a full batch of the turn's (one round of handlers, see sharedTurn) means a backlog, as a full batch of its own
        turns.push(await this.#next(sql, outcome.tenant, outcome.result, Math.min(this.options.batchSize, this.options.concurrency)))
        continue
      }
      const failed = await this.#failed(sql, outcome.tenant, outcome.error)
      turns.push(failed.turn)
      if (failed.lostMs !== undefined) lost = Math.max(lost ?? 0, failed.lostMs)
    }
    // a lost connection is every tenant's: this slot waits, once
    if (lost !== undefined) await this.#sleep(lost)
    return turns
  }

  /**
   * The safety poll, every `--interval-max`, of the tenants that wait for a notification: a probe of all of them
   * (a few statements, one per call of up to `probeChunk` tenants, each between two turns: the tenants with work
   * wait for each, and all of them at once would hold the claim connection for a tenth of a second or more), and
   * a turn for those with claimable events (a dead replica's batch rolled back, a retry fell due, a
   * notification went missing). An idle tenant costs no claim of its own.
   */
  async #probe(sql: Sql): Promise<void> {
    const startedAt = performance.now()
    if (this.#unprobed.length === 0) {
      this.#probedAt = startedAt
      this.#unprobed = this.#rotation.waiting()
    }
    const waiting = this.#unprobed.splice(0, probeChunk).filter((tenant) => !tenant.gone)
    const claimable = waiting.length === 0 ? new Set<string>() : await outboxProbeTenants(sql, waiting.map((tenant) => tenant.outbox))
    let woken = false
    for (const tenant of waiting) if (claimable.has(tenant.schema) && this.#rotation.wake(tenant)) woken = true
    if (woken) this.#wakeSleepers()
    // an iteration of the loop, as an empty claim is: the health check and the supervisor see it alive
    this.#lastLoopAt = Date.now()
    this.#shared.afterBatch?.(emptyBatchReport(performance.now() - startedAt))
  }

  /** One batch of the tenant's outbox, and what its next turn is: the single poller's loop, for one tenant. */
  async #turn(sql: Sql, tenant: TenantOutbox): Promise<Turn> {
    let batch
    try {
      batch = await tenant.runner.run(sql, tenant.deferrals)
      this.#lastLoopAt = Date.now()
      tenant.errorSteps = 0
    } catch (error) {
      const failed = await this.#failed(sql, tenant, error)
      // a lost connection is every tenant's: this slot waits; a failure of one tenant's outbox holds back that tenant only
      if (failed.lostMs !== undefined) await this.#sleep(failed.lostMs)
      return failed.turn
    }
    return this.#next(sql, tenant, batch)
  }

  /** After a failed batch of the tenant: let go of it if its outbox is gone, else recover and back off (`lostMs`: the connection was lost). */
  async #failed(sql: Sql, tenant: TenantOutbox, error: unknown): Promise<{ turn: Turn; lostMs?: number }> {
    if (isOutboxGone(error)) {
      await outboxRollback(sql).catch(() => {})
      this.#letGo(tenant, 'its outbox is gone')
      return { turn: again }
    }
    const delayMs = exponentialDelayMs(++tenant.errorSteps, this.options.intervalMinMs, errorDelayMaxMs)
    await tenant.runner.recover(sql, error, delayMs)
    return { turn: { idleUntil: performance.now() + delayMs }, lostMs: isConnectionFailure(error) ? delayMs : undefined }
  }

  /** The tenant's next turn after a batch (`batchSize`: what its claim could take at most). */
  async #next(sql: Sql, tenant: TenantOutbox, batch: BatchResult, batchSize = this.options.batchSize): Promise<Turn> {
    const { intervalMinMs, intervalMaxMs } = this.options
    if (batch.deferred !== undefined) tenant.deferrals = batch.deferred === 'none' ? 0 : tenant.deferrals + 1
    if (batch.claimed === 0 && batch.skippedSuspects) return again
    if (batch.deferred === 'all') return { idleUntil: performance.now() + batch.deferMs }
    const listening = this.#listener.listening
    if (batch.claimed > 0) {
      tenant.idleSteps = 0
      // A full batch means a backlog: writers need not notify. A partial one drained the outbox as the claim
      // saw it: with the flag up, a later event notifies, so the tenant waits for that instead of claiming once
      // more for nothing (half the turns of a tenant that gets an event now and then). What the claim could
      // not see or take (a row another replica held, one past the byte budget) the safety poll finds.
      if (tenant.wakeUp.raised && batch.claimed >= batchSize) await tenant.wakeUp.lower(sql)
      if (listening && tenant.wakeUp.raised && batch.claimed < batchSize && !batch.skippedSuspects) return { idleUntil: Number.POSITIVE_INFINITY }
      return again
    }
    if (listening && !tenant.wakeUp.raised) {
      // raised, then look once more: an event committed just before the flag was seen never notified
      await tenant.wakeUp.raise(sql)
      return again
    }
    // listening: asleep until its notification or the safety poll finds work (see #probe)
    return { idleUntil: listening ? Number.POSITIVE_INFINITY : performance.now() + exponentialDelayMs(++tenant.idleSteps, intervalMinMs, intervalMaxMs) }
  }

  #sleep(ms: number): Promise<void> {
    if (this.#lifecycle.stopRequested) return Promise.resolve()
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.#sleepers.delete(done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.#sleepers.add(done)
    })
  }

  #wakeSleepers(): void {
    for (const wake of [...this.#sleepers]) wake()
  }
}

/** A schema name as a shell argument: quoted unless it is a plain identifier. */
function schemaArgument(schema: string): string {
  return /^[a-z_][a-z0-9_]*$/.test(schema) ? schema : `'${schema.replaceAll("'", "'\\''")}'`
}

/** The tenant's schema or outbox was dropped under the poller: let it go, no incident. */
function isOutboxGone(error: unknown): boolean {
  const state = sqlState(error)
  return state === SqlState.undefinedTable || state === SqlState.invalidSchemaName
}
