import type { Sql } from 'postgres'
import type { OutboxTable } from '../outbox/outbox-table.js'

export interface CleanupOptions {
  /** Delete processed events processed longer ago than this (milliseconds). */
  olderThanMs: number
  /** Also delete dead events dead longer ago than this (milliseconds). Default: keep every dead event. */
  deadOlderThanMs?: number
  /** Rows deleted per transaction. */
  chunkSize: number
  /** Called after each committed chunk with the totals so far. */
  onChunk?: (deleted: CleanupResult) => void
}

export interface CleanupResult {
  processed: number
  dead: number
}

/**
 * Deletes old processed events, and old dead events when asked, in chunks of `chunkSize`: each chunk
 * one DELETE, its own transaction, its rows picked from `<outbox>_processed` (or `_dead`) with
 * `FOR UPDATE SKIP LOCKED`. Small transactions keep locks and WAL bursts short and let autovacuum
 * follow; pending events are never touched, so pollers run on undisturbed. The cut-off is fixed when
 * the cleanup starts, on the database's clock. Rows go by `(id, created_at)`, the primary key of a partitioned
 * outbox, so each is found in its own partition (on a plain outbox, by id).
 */
export async function outboxCleanup(sql: Sql, outbox: OutboxTable, options: CleanupOptions): Promise<CleanupResult> {
  const t = sql.unsafe(outbox.qualified)
  const result: CleanupResult = { processed: 0, dead: 0 }
  const [cutoffs] = await sql<{ processed: Date; dead: Date | null }[]>`
    select now() - ${options.olderThanMs}::float8 * interval '1 millisecond' as processed,
           now() - ${options.deadOlderThanMs ?? null}::float8 * interval '1 millisecond' as dead`
  const steps: Array<{ key: keyof CleanupResult; column: string; cutoff: Date }> = [{ key: 'processed', column: 'processed_at', cutoff: cutoffs!.processed }]
  if (cutoffs!.dead !== null) steps.push({ key: 'dead', column: 'dead_at', cutoff: cutoffs!.dead })
  for (const { key, column, cutoff } of steps) {
    for (;;) {
      const deleted = await sql`
        delete from ${t}
         where (id, created_at) in (select id, created_at from ${t}
                       where ${sql.unsafe(column)} < ${cutoff}
                       order by ${sql.unsafe(column)}
                       limit ${options.chunkSize}
                         for update skip locked)`
      result[key] += deleted.count
      if (deleted.count > 0) options.onChunk?.({ ...result })
      if (deleted.count < options.chunkSize) break
    }
  }
  return result
}
