import type { Sql } from 'postgres'
import type { ClaimedEvent } from './claimed-event.js'
import { createdRange, createdWithin } from './created-range.js'
import { type OutboxTable, quoteLiteral } from '../outbox/outbox-table.js'

/**
 * Pausing by event-type pattern. A pause is a row of the outbox's settings table named `paused:<pattern>`.
 * A poller that claims an event of a paused type parks it instead of handling it: `retry_at` becomes
 * `'infinity'`, which takes the row out of the fresh index and puts it at the far end of the retry index,
 * where the claim's `retry_at <= now()` range never reaches. So paused events cost the claim nothing,
 * however many wait; resume puts them back as they were (fresh events in id order, retries due at once).
 */
export const pausedSettingPrefix = 'paused:'

/** The NOTIFY payload on the outbox's channel that tells every replica to re-read the pauses. */
export const pauseNotice = 'paused'

/** `retry_at` of a parked (paused) event. */
export const parkedRetryAt = 'infinity'

/**
 * SQL: whether the type in `typeSql` matches the pattern in `patternSql` (`*`, `prefix.*` or an exact type),
 * the same rule as handlers' patterns (event-type-pattern.ts).
 */
export function patternMatchesSql(patternSql: string, typeSql: string): string {
  return `(${patternSql} = '*' or ${patternSql} = ${typeSql} or (right(${patternSql}, 2) = '.*' and starts_with(${typeSql}, left(${patternSql}, -1))))`
}

/**
 * The advisory lock between parking and resuming (keyed by the settings table's oid). A batch takes it
 * shared before it parks, resume takes it exclusive to delete its pause: resume waits for the batches
 * that were parking under it, and its release pass then sees every row they parked. No privilege needed.
 */
export function pauseLockSql(outbox: OutboxTable, mode: 'shared' | 'exclusive'): string {
  const fn = mode === 'shared' ? 'pg_advisory_xact_lock_shared' : 'pg_advisory_xact_lock'
  return `select ${fn}(${quoteLiteral(outbox.settings)}::regclass::oid::int, 1886680421)`
}

/** The pauses in force, oldest first: the pattern, who set it, when. */
export function pausedTypesSql(outbox: OutboxTable): string {
  return `select substr(name, ${pausedSettingPrefix.length + 1}) as pattern, value as paused_by, set_at
            from ${outbox.settings} where starts_with(name, ${quoteLiteral(pausedSettingPrefix)}) order by set_at, name`
}

/**
 * Parks the claimed events ($1) that a pause still in force matches, read after the lock: a pause resumed meanwhile
 * parks nothing. Bounded by their created_at ($2, $3), so a partitioned outbox probes only their partitions.
 */
export function parkSql(outbox: OutboxTable): string {
  return `update ${outbox.qualified} as o set retry_at = '${parkedRetryAt}'
           where o.id = any($1::bigint[]) and ${createdWithin(2, 'o')} and exists (
             select 1 from ${outbox.settings} as s
              where starts_with(s.name, ${quoteLiteral(pausedSettingPrefix)})
                and ${patternMatchesSql(`substr(s.name, ${pausedSettingPrefix.length + 1})`, 'o.event_type')})
          returning o.id::text as id`
}

/**
 * A poller's view of the pauses. Re-read before a claim when a notification said they changed, and at
 * least every `refreshEveryMs` (`--interval-max`), so a replica that missed the notification (a transaction
 * pooler does not pass LISTEN on) still learns of a pause in time.
 */
export class PausedTypes {
  readonly #read: string
  readonly #lock: string
  readonly #park: string
  readonly #refreshEveryMs: number
  #patterns: string[] = []
  #readAt = Number.NEGATIVE_INFINITY
  #stale = true

  constructor(outbox: OutboxTable, refreshEveryMs: number) {
    this.#read = pausedTypesSql(outbox)
    this.#lock = pauseLockSql(outbox, 'shared')
    this.#park = parkSql(outbox)
    this.#refreshEveryMs = refreshEveryMs
  }

  /** A notification on the outbox's channel: a pause notice makes the next claim re-read the pauses. */
  notified(payload: string): void {
    if (payload === pauseNotice) this.#stale = true
  }

  /**
   * Re-reads the pauses if told to, or if the last read is older than `refreshEveryMs`. The read is sent at once,
   * so a claim issued right after goes out in the same round trip (and no later than the claim's own answer is
   * the read's).
   */
  async refresh(connection: Sql): Promise<void> {
    if (!this.#stale && performance.now() - this.#readAt < this.#refreshEveryMs) return
    const rows = await connection.unsafe<Array<{ pattern: string }>>(this.#read).execute()
    this.#patterns = rows.map((row) => row.pattern)
    this.#readAt = performance.now()
    this.#stale = false
  }

  /**
   * In the batch transaction, right after the claim: parks the claimed events of paused types and returns
   * the others, to be handled. Costs nothing while no pause is in force.
   */
  async park(connection: Sql, events: ClaimedEvent[]): Promise<{ events: ClaimedEvent[]; parked: number }> {
    if (this.#patterns.length === 0) return { events, parked: 0 }
    const candidates = events.filter((event) => this.#patterns.some((pattern) => patternMatches(pattern, event.event_type)))
    if (candidates.length === 0) return { events, parked: 0 }
    const [, rows] = await Promise.all([
      connection.unsafe(this.#lock),
      connection.unsafe<Array<{ id: string }>>(this.#park, [candidates.map((event) => event.id), ...createdRange(candidates)], { prepare: true }),
    ])
    const parked = new Set(rows.map((row) => row.id))
    return { events: events.filter((event) => !parked.has(event.id)), parked: parked.size }
  }
}

/** patternMatchesSql in TypeScript: the pre-filter that spares the park statement when no claimed event is paused. */
export function patternMatches(pattern: string, type: string): boolean {
  return pattern === '*' || pattern === type || (pattern.endsWith('.*') && type.startsWith(pattern.slice(0, -1)))
}
