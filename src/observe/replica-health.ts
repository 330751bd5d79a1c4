import type { Sql } from 'postgres'
import { type LostCapture, lostCaptures } from '../capture/capture-registry.js'
import { horizonWarnings, vacuumHorizon } from '../database/vacuum-horizon.js'
import { errorMessage } from '../errors.js'
import type { HealthCheck } from './http-server.js'
import type { OutboxMetrics } from './metrics.js'
import { pausedTypesSql } from '../poller/paused-types.js'
import { outboxLayout } from '../ops/partition-status.js'
import { type OutboxTable, pendingCondition } from '../outbox/outbox-table.js'
import type { TenantBacklog } from './tenant-backlog.js'

/**
 * Health of a replica, from the process that serves HTTP: the poll loop finished a claim recently (a batch
 * may legitimately take up to the handler timeout) and the database answers within 2 s. Also samples the
 * backlog and dead-event gauges, the lost captured tables and a partitioned outbox's upkeep every 10 s, so a scrape
 * never runs a query. A lost capture, or upkeep not running, is a warning in the /healthz body, not a failure: the
 * pollers themselves are healthy. With `tenants` (a replica serving `schemas`), the backlog is every tenant's,
 * sampled by that function, instead of the one outbox's, and so are the partition gauges and warnings (the tenants' layouts).
 */
export class ReplicaHealth {
  #timer: NodeJS.Timeout | undefined
  #lostCaptures: LostCapture[] = []
  #horizonWarnings: string[] = []
  #layoutWarnings: string[] = []

  constructor(
    private readonly sql: Sql,
    private readonly outbox: OutboxTable,
    private readonly metrics: OutboxMetrics,
    /** When the loop last finished a claim (ms since the epoch, 0: not yet). */
    private readonly lastLoopAt: () => number,
    /** Longest a healthy loop goes without finishing a claim. */
    private readonly staleAfterMs: number,
    private readonly tenants?: (sql: Sql) => Promise<TenantBacklog>,
  ) {}

  startSampling(everyMs = 10_000): void {
    const sample = async () => {
      if (this.tenants !== undefined) {
        try {
          const backlog = await this.tenants(this.sql)
          this.metrics.setTenantBacklog(backlog)
          this.metrics.setTenantLayouts(backlog.tenants.map((tenant) => tenant.layout))
          this.#layoutWarnings = tenantLayoutWarnings(backlog)
        } catch {
          // the health check reports a database that does not answer
        }
      } else await this.#sampleOutbox()
      try {
        const horizon = await vacuumHorizon(this.sql)
        this.#horizonWarnings = horizonWarnings(horizon)
        this.metrics.setVacuumHorizon(horizon.oldestSnapshot?.ageSeconds ?? 0, this.#horizonWarnings.length)
      } catch {
        // same: the health check reports a database that does not answer
      }
      if (this.tenants !== undefined) return // the tenants' layouts came with their backlog
      try {
        const [clock] = await this.sql<Array<{ now: Date }>>`select now()`
        const layout = await outboxLayout(this.sql, this.outbox, clock!.now)
        this.#layoutWarnings = layout.warnings
        this.metrics.setLayout(layout.partitionBy, layout.ahead, layout.defaultRows)
      } catch {
        // same: the health check reports a database that does not answer
      }
    }
    void sample()
    this.#timer = setInterval(() => void sample(), everyMs)
    this.#timer.unref()
  }

  /** The one outbox's backlog, paused types and lost captures. */
  async #sampleOutbox(): Promise<void> {
    try {
      const [row] = await this.sql.unsafe(
        `select count(*)::int as pending, coalesce(extract(epoch from now() - min(created_at)), 0)::float8 as oldest,
                (select count(*)::int from ${this.outbox.qualified} where dead_at is not null) as dead
           from ${this.outbox.qualified} where ${pendingCondition}`,
      )
      this.metrics.setBacklog(row!.pending as number, row!.oldest as number, row!.dead as number)
    } catch {
      // the health check reports a database that does not answer
    }
    try {
      this.metrics.setPausedTypes((await this.sql.unsafe<Array<{ pattern: string }>>(pausedTypesSql(this.outbox))).map((row) => row.pattern))
    } catch {
      // same: the health check reports a database that does not answer
    }
    try {
      this.#lostCaptures = await lostCaptures(this.sql, this.outbox)
      this.metrics.setLostCaptures(this.#lostCaptures)
    } catch {
      // same: the health check reports it; an outbox not yet migrated has no registry
    }
  }

  stop(): void {
    clearInterval(this.#timer)
  }

  async check(): Promise<HealthCheck> {
    const warnings = [...this.#lostCaptures.map((lost) => `captured table ${lost.table} ${lost.reason}; capture it again: ${lost.recapture.command}`), ...this.#horizonWarnings, ...this.#layoutWarnings]
    const last = this.lastLoopAt()
    const age = Date.now() - last
    if (last === 0) return { ok: false, reason: 'the poll loop has not run yet', warnings }
    if (age > this.staleAfterMs) return { ok: false, reason: `the poll loop has not finished a claim for ${Math.round(age / 1000)} s`, warnings }
    try {
      await Promise.race([this.sql`select 1`, new Promise((_, reject) => setTimeout(() => reject(new Error('no answer within 2 s')), 2_000).unref())])
      return { ok: true, warnings }
    } catch (error) {
      return { ok: false, reason: `database: ${errorMessage(error)}`, warnings }
    }
  }
}

/** Tenants whose layout is warned of, listed in /healthz: this many at most, the rest counted. */
const tenantWarningsShown = 10

/** The served tenants' layout warnings, each prefixed with its schema (`status --schemas` lists them all). */
function tenantLayoutWarnings(backlog: TenantBacklog): string[] {
  const lagging = backlog.tenants.filter((tenant) => tenant.layout.warnings.length > 0)
  const shown = lagging.slice(0, tenantWarningsShown).flatMap((tenant) => tenant.layout.warnings.map((warning) => `${tenant.schema}: ${warning}`))
  return lagging.length > tenantWarningsShown ? [...shown, `partition upkeep lags in ${lagging.length - tenantWarningsShown} more tenants (see outbox-poller status --schemas)`] : shown
}
