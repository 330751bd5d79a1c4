import type { Sql } from 'postgres'
import { errorMessage } from '../errors.js'
import type { OutboxTable } from '../outbox/outbox-table.js'
import type { Logger } from '../types.js'

/** An event as the live tail shows it. */
export interface TailEvent {
  id: string
  event_type: string
  entity_id: string
  attempts: number
  created_at: Date
  processed_at: Date
}

type Listener = (events: TailEvent[]) => void

/** How far back each look reaches: a batch's processed_at is its transaction's start, visible only at its commit. */
const lookBackSeconds = 30

/**
 * Events as they are processed, for the console's live tail (server-sent events). One query every `everyMs`
 * while at least one browser watches, whatever their number: a range of `<outbox>_processed` over the last
 * seconds, at most 500 rows; ids already sent are remembered for as long as that range reaches back.
 */
export class LiveTail {
  readonly #listeners = new Set<Listener>()
  readonly #sent = new Map<string, number>()
  #timer: NodeJS.Timeout | undefined
  #since: Date | undefined

  constructor(
    private readonly sql: Sql,
    private readonly outbox: OutboxTable,
    private readonly log: Logger,
    private readonly everyMs = 1_000,
  ) {}

  /** Adds a listener; returns the function that removes it. The first starts the polling, the last stops it. */
  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener)
    if (this.#timer === undefined) {
      this.#since = undefined
      this.#timer = setInterval(() => void this.#look(), this.everyMs)
      this.#timer.unref()
    }
    return () => {
      this.#listeners.delete(listener)
      if (this.#listeners.size === 0) this.stop()
    }
  }

  stop(): void {
    clearInterval(this.#timer)
    this.#timer = undefined
    this.#sent.clear()
  }

  async #look(): Promise<void> {
    try {
      const [clock] = await this.sql<{ now: Date }[]>`select now()`
      // the first look starts now: the tail shows what is processed from the moment one watches
      const since = this.#since ?? clock!.now
      this.#since = clock!.now
      const rows = await this.sql<TailEvent[]>`
        select id::text as id, event_type, entity_id, attempts, created_at, processed_at from ${this.sql.unsafe(this.outbox.qualified)}
         where processed_at > ${since}::timestamptz - ${lookBackSeconds} * interval '1 second' and processed_at <= ${clock!.now}
         order by processed_at, id limit 500`
      const fresh = rows.filter((row) => !this.#sent.has(row.id) && row.processed_at.getTime() >= since.getTime() - lookBackSeconds * 1000)
      const forgetBefore = clock!.now.getTime() - 2 * lookBackSeconds * 1000
      for (const [id, at] of this.#sent) if (at < forgetBefore) this.#sent.delete(id)
      for (const row of fresh) this.#sent.set(row.id, row.processed_at.getTime())
      if (fresh.length > 0) for (const listener of this.#listeners) listener(fresh)
    } catch (error) {
      this.log.warn({ error: errorMessage(error) }, 'console: live tail query failed')
    }
  }
}
