import type { Fragment, Sql } from 'postgres'
import { ConfigError } from '../errors.js'
import { eventTypeCondition } from '../poller/event-type-pattern.js'
import type { OutboxTable } from '../outbox/outbox-table.js'

/** Which events to put back in the queue. At least one of `dead` and `processed`. */
export interface ReplaySelection {
  /** Dead-lettered events. */
  dead?: boolean
  /** Processed events. */
  processed?: boolean
  /** `issue.created`, `issue.*` or `*` (the default). */
  typePattern?: string
  /** Only these row ids (bigint ids, as strings). */
  ids?: readonly string[]
  /** Only events that died (`dead_at`) or were processed (`processed_at`) at or after this moment. */
  since?: Date
}

export interface ReplayOptions extends ReplaySelection {
  /** Rows per transaction. */
  chunkSize: number
  /** Called after each committed chunk with the number re-queued so far. */
  onChunk?: (replayed: number) => void
}

/** How many events a replay with this selection would re-queue now (for a confirmation threshold). */
export async function outboxReplayCount(sql: Sql, outbox: OutboxTable, selection: ReplaySelection): Promise<number> {
  let total = 0
  for (const part of parts(selection)) {
    const [row] = await sql<{ count: number }[]>`
      select count(*)::int as count from ${sql.unsafe(outbox.qualified)} where ${replaySelectionCondition(sql, part, selection, sql`now()`)}`
    total += row!.count
  }
  return total
}

/**
 * Puts events back in the queue as if new: not processed, not dead, due now, no attempts, no error, not
 * suspect. Returns how many. Works in chunks of `chunkSize`, each its own short transaction whose
 * selection is `FOR UPDATE SKIP LOCKED`, so pollers keep running and no row is locked for long; a row
 * locked by someone else at that moment is left as it is. Only rows that died or were processed before
 * the replay started are selected, so an event replayed and handled again meanwhile is not replayed twice.
 * Each chunk wakes sleeping pollers, as an insert does.
 */
export async function outboxReplay(sql: Sql, outbox: OutboxTable, options: ReplayOptions): Promise<number> {
  const t = sql.unsafe(outbox.qualified)
  const selected = parts(options)
  const [clock] = await sql<{ started: Date }[]>`select now() as started`
  let replayed = 0
  for (const part of selected) {
    const column = sql.unsafe(part === 'dead' ? 'dead_at' : 'processed_at')
    for (;;) {
      const count = await sql.begin(async (tx) => {
        const chunk = await tx`
          with chosen as (
            select id from ${t}
             where ${replaySelectionCondition(sql, part, options, sql`${clock!.started}::timestamptz`)}
             order by ${column}
             limit ${options.chunkSize}
               for update skip locked
          )
          update ${t} as o
             set processed_at = null, dead_at = null, retry_at = null, attempts = 0, last_error = null, suspect = false
            from chosen
           where o.id = chosen.id`
        if (chunk.count > 0) await tx`select pg_notify(${outbox.channel}, '') from ${sql.unsafe(outbox.wakeup)} where asleep`
        return chunk.count
      })
      replayed += count
      if (count > 0) options.onChunk?.(replayed)
      if (count < options.chunkSize) break
    }
  }
  return replayed
}

type Part = 'dead' | 'processed'

function parts(selection: ReplaySelection): Part[] {
  const selected: Part[] = []
  if (selection.dead) selected.push('dead')
  if (selection.processed) selected.push('processed')
  if (selected.length === 0) throw new ConfigError('replay needs dead or processed events to select')
  return selected
}

/**
 * The rows of one part of the selection that died or were processed by `until`. Every value a parameter. The
 * one selection of dead events: `dead`, `dead --delete` and the console list and delete with it too (dead.ts).
 */
export function replaySelectionCondition(sql: Sql, part: Part, selection: ReplaySelection, until: Fragment): Fragment {
  const column = sql.unsafe(part === 'dead' ? 'dead_at' : 'processed_at')
  const since = selection.since === undefined ? sql`true` : sql`${column} >= ${selection.since}`
  const ids = selection.ids === undefined ? sql`true` : sql`id = any(${[...selection.ids]}::bigint[])`
  return sql`${column} is not null and ${column} <= ${until} and ${since} and ${ids} and ${eventTypeCondition(sql, selection.typePattern)}`
}
