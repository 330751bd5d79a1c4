import type { Sql, TransactionSql } from 'postgres'
import { parseEventTypePattern } from '../poller/event-type-pattern.js'
import { parkedRetryAt, patternMatchesSql, pauseLockSql, pauseNotice, pausedSettingPrefix, pausedTypesSql } from '../poller/paused-types.js'
import { type OutboxTable, pendingCondition } from '../outbox/outbox-table.js'

/** A pause in force. */
export interface PausedType {
  /** `billing.*`, `billing.invoice.created` or `*`. */
  pattern: string
  /** Who paused it, as recorded (`cli <user>@<host>`, `console <address>`). */
  pausedBy: string
  since: Date
}

/** The pauses in force, oldest first. */
export async function outboxPausedTypes(sql: Sql | TransactionSql, outbox: OutboxTable): Promise<PausedType[]> {
  const rows = await sql.unsafe<Array<{ pattern: string; paused_by: string; set_at: Date }>>(pausedTypesSql(outbox))
  return rows.map((row) => ({ pattern: row.pattern, pausedBy: row.paused_by, since: row.set_at }))
}

/**
 * Pauses an event-type pattern: records it in the outbox's settings and notifies every replica, which stops
 * handling events of those types from its next claim (and within `--interval-max` without the notification).
 * Idempotent: returns false when the pattern was paused already.
 */
export async function outboxPause(sql: Sql, outbox: OutboxTable, pattern: string, pausedBy: string): Promise<boolean> {
  parseEventTypePattern(pattern, 'pause pattern')
  return sql.begin(async (tx) => {
    const inserted = await tx.unsafe(`insert into ${outbox.settings} (name, value) values ($1, $2) on conflict (name) do nothing`, [pausedSettingPrefix + pattern, pausedBy])
    await tx`select pg_notify(${outbox.channel}, ${pauseNotice})`
    return inserted.count === 1
  })
}

export interface ResumeResult {
  /** The pattern was paused (false: it was not, and only the release ran). */
  wasPaused: boolean
  /** Parked events put back in the queue. */
  released: number
}

/**
 * Resumes an event-type pattern: deletes its pause and notifies every replica, then puts back the parked
 * events it matches (unless another pause still matches them), in chunks of `chunkSize`: fresh events return
 * to their place in id order, events that had failed become due at once. Deleting the pause waits for the
 * batches parking under it (pauseLockSql), so none of their events is left parked. Running it again, or for
 * a pattern not paused, only releases what no pause matches: it is safe to repeat.
 */
export async function outboxResume(sql: Sql, outbox: OutboxTable, pattern: string, options: { chunkSize: number }): Promise<ResumeResult> {
  parseEventTypePattern(pattern, 'resume pattern')
  const wasPaused = await sql.begin(async (tx) => {
    await tx.unsafe(pauseLockSql(outbox, 'exclusive'))
    const deleted = await tx.unsafe(`delete from ${outbox.settings} where name = $1`, [pausedSettingPrefix + pattern])
    await tx`select pg_notify(${outbox.channel}, ${pauseNotice})`
    return deleted.count === 1
  })
  const stillPaused = `exists (select 1 from ${outbox.settings} as s where starts_with(s.name, '${pausedSettingPrefix}')
                                and ${patternMatchesSql(`substr(s.name, ${pausedSettingPrefix.length + 1})`, 'o.event_type')})`
  const release = `
    with chosen as (
      select id from ${outbox.qualified} as o
       where ${pendingCondition} and retry_at = '${parkedRetryAt}' and ${patternMatchesSql('$1::text', 'o.event_type')} and not ${stillPaused}
       limit $2 for update
    )
    update ${outbox.qualified} as o
       set retry_at = case when o.attempts > 0 or o.suspect then now() end
      from chosen where o.id = chosen.id`
  let released = 0
  for (;;) {
    const count = await sql.begin(async (tx) => {
      const chunk = await tx.unsafe(release, [pattern, options.chunkSize])
      if (chunk.count > 0) await tx`select pg_notify(${outbox.channel}, '') from ${sql.unsafe(outbox.wakeup)} where asleep`
      return chunk.count
    })
    released += count
    if (count < options.chunkSize) return { wasPaused, released }
  }
}
