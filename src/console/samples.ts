import type { Sql } from 'postgres'
import { errorMessage } from '../errors.js'
import { type OutboxStatus, outboxStatus } from '../ops/monitor.js'
import type { OutboxTable } from '../outbox/outbox-table.js'
import type { Logger } from '../types.js'

/** One point of the overview's charts. */
export interface Sample {
  /** ms since the epoch, the database's clock. */
  at: number
  pending: number
  due: number
  retrying: number
  paused: number
  dead: number
  processedLastMinute: number
  lagSeconds: number
  p50: number | null
  p95: number | null
  p99: number | null
}

/**
 * The console's picture of the outbox: `outbox-poller status`'s query (outboxStatus), run every `everyMs`
 * whoever is looking, the points of the last hour kept in memory for the charts. So a page view or a chart
 * refresh runs no query, and however many browsers are open the database sees one status query per
 * interval. The part per event type, which reads the last hour's processed rows, runs only every
 * `typesEveryMs` (and after an action); the samples between keep the last one's.
 */
export class ConsoleSamples {
  readonly #points: Sample[] = []
  #latest: OutboxStatus | undefined
  #error: string | undefined
  #timer: NodeJS.Timeout | undefined
  #running: Promise<void> | undefined

  constructor(
    private readonly sql: Sql,
    private readonly outbox: OutboxTable,
    private readonly log: Logger,
    private readonly everyMs = 5_000,
    private readonly keepMs = 3_600_000,
    private readonly typesEveryMs = 60_000,
  ) {}

  #typesAt = Number.NEGATIVE_INFINITY

  /** Takes the first sample, then one every `everyMs`. */
  async start(): Promise<void> {
    await this.sample()
    this.#timer = setInterval(() => void this.sample(), this.everyMs)
    this.#timer.unref()
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer)
    await this.#running
  }

  /** Samples now (after an action, so the pages show its effect at once). */
  sample(options: { types?: boolean } = {}): Promise<void> {
    if (options.types) this.#typesAt = Number.NEGATIVE_INFINITY
    return (this.#running ??= this.#sample().finally(() => (this.#running = undefined)))
  }

  async #sample(): Promise<void> {
    try {
      const types = performance.now() - this.#typesAt >= this.typesEveryMs
      const status = await outboxStatus(this.sql, this.outbox, { types })
      if (types) this.#typesAt = performance.now()
      else status.types = this.#latest?.types ?? []
      this.#latest = status
      this.#error = undefined
      this.#points.push({
        at: status.at.getTime(),
        pending: status.pending,
        due: status.due,
        retrying: status.retrying,
        paused: status.paused,
        dead: status.dead,
        processedLastMinute: status.processedLastMinute,
        lagSeconds: status.oldestPendingSeconds,
        ...status.latency,
      })
      while (this.#points.length > 0 && this.#points[0]!.at < status.at.getTime() - this.keepMs) this.#points.shift()
    } catch (error) {
      if (this.#error === undefined) this.log.warn({ error: errorMessage(error) }, 'console: status query failed')
      this.#error = errorMessage(error)
    }
  }

  /** The last status read; undefined before the first succeeded. */
  get latest(): OutboxStatus | undefined {
    return this.#latest
  }

  /** Why the last sample failed, if it did. */
  get error(): string | undefined {
    return this.#error
  }

  get points(): readonly Sample[] {
    return this.#points
  }
}
