import type { Sql } from 'postgres'
import { errorMessage } from './errors.js'
import type { HealthCheck } from './http-server.js'
import type { OutboxMetrics } from './metrics.js'
import type { OutboxTable } from './outbox-table.js'

/**
 * Health of a replica, from the process that serves HTTP: the poll loop finished a claim recently (a batch
 * may legitimately take up to the handler timeout) and the database answers within 2 s. Also samples the
 * backlog gauges every 10 s, so a scrape never runs a query.
 */
export class ReplicaHealth {
  #timer: NodeJS.Timeout | undefined

  constructor(
    private readonly sql: Sql,
    private readonly outbox: OutboxTable,
    private readonly metrics: OutboxMetrics,
    /** When the loop last finished a claim (ms since the epoch, 0: not yet). */
    private readonly lastLoopAt: () => number,
    /** Longest a healthy loop goes without finishing a claim. */
    private readonly staleAfterMs: number,
  ) {}

  startSampling(everyMs = 10_000): void {
    const sample = async () => {
      try {
        const [row] = await this.sql.unsafe(
          `select count(*)::int as pending, coalesce(extract(epoch from now() - min(created_at)), 0)::float8 as oldest
             from ${this.outbox.qualified} where processed_at is null and dead_at is null`,
        )
        this.metrics.setBacklog(row!.pending as number, row!.oldest as number)
      } catch {
        // the health check reports a database that does not answer
      }
    }
    void sample()
    this.#timer = setInterval(() => void sample(), everyMs)
    this.#timer.unref()
  }

  stop(): void {
    clearInterval(this.#timer)
  }

  async check(): Promise<HealthCheck> {
    const last = this.lastLoopAt()
    const age = Date.now() - last
    if (last === 0) return { ok: false, reason: 'the poll loop has not run yet' }
    if (age > this.staleAfterMs) return { ok: false, reason: `the poll loop has not finished a claim for ${Math.round(age / 1000)} s` }
    try {
      await Promise.race([this.sql`select 1`, new Promise((_, reject) => setTimeout(() => reject(new Error('no answer within 2 s')), 2_000).unref())])
      return { ok: true }
    } catch (error) {
      return { ok: false, reason: `database: ${errorMessage(error)}` }
    }
  }
}
