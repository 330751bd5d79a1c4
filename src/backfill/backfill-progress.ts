import type { Sql, TransactionSql } from 'postgres'
import { type OutboxTable, quoteLiteral } from '../outbox/outbox-table.js'

/** A backfill's progress is a row of the outbox's settings table named `backfill:<table>` (one per table). */
export const backfillSettingPrefix = 'backfill:'

/** What a backfill records after each chunk, in the chunk's own transaction: a resume never repeats or skips a row. */
export interface BackfillProgress {
  /** The table as `regclass` prints it. */
  table: string
  /** The `--where` condition, or null. */
  where: string | null
  eventType: string
  /** The last key written, as the key column's text; null before the first chunk. */
  lastKey: string | null
  /** Rows written so far. */
  rows: number
  /** Rows the backfill expects in all (counted when it started or resumed). */
  total: number
  startedAt: string
  updatedAt: string
  /** Set when the last chunk was written. */
  finishedAt: string | null
}

/** A backfill recorded in the settings table, and whether a `backfill` process holds its table's lock now. */
export interface BackfillState extends BackfillProgress {
  running: boolean
}

/**
 * The advisory lock one backfill of a table holds, on its own session, while it runs: keyed by the settings
 * table's oid and the table's oid, so pg_locks shows which table (classid, objid; objsubid 2).
 */
export function backfillLockSql(outbox: OutboxTable, tableOid: string, action: 'lock' | 'unlock'): string {
  return `select ${action === 'lock' ? 'pg_try_advisory_lock' : 'pg_advisory_unlock'}(${quoteLiteral(outbox.settings)}::regclass::oid::int, ${Number(tableOid) | 0}) as locked`
}

export async function readBackfillProgress(sql: Sql | TransactionSql, outbox: OutboxTable, table: string): Promise<BackfillProgress | undefined> {
  const [row] = await sql.unsafe<Array<{ value: string }>>(`select value from ${outbox.settings} where name = $1`, [backfillSettingPrefix + table])
  return row === undefined ? undefined : (JSON.parse(row.value) as BackfillProgress)
}

export async function writeBackfillProgress(sql: Sql | TransactionSql, outbox: OutboxTable, progress: BackfillProgress): Promise<void> {
  await sql.unsafe(
    `insert into ${outbox.settings} (name, value) values ($1, $2) on conflict (name) do update set value = excluded.value, set_at = now()`,
    [backfillSettingPrefix + progress.table, JSON.stringify(progress)],
  )
}

/** The backfills not finished yet: running (their lock is held) or stopped (resumable), oldest first. */
export async function outboxBackfills(sql: Sql | TransactionSql, outbox: OutboxTable): Promise<BackfillState[]> {
  const rows = await sql.unsafe<Array<{ value: string; running: boolean }>>(`
    select s.value, exists (select 1 from pg_locks l
                             where l.locktype = 'advisory' and l.granted and l.objsubid = 2 and l.database = (select oid from pg_database where datname = current_database())
                               and l.classid = ${quoteLiteral(outbox.settings)}::regclass::oid and l.objid = to_regclass(substr(s.name, ${backfillSettingPrefix.length + 1}))::oid) as running
      from ${outbox.settings} as s
     where starts_with(s.name, ${quoteLiteral(backfillSettingPrefix)}) and (s.value::jsonb ->> 'finishedAt') is null
     order by s.value::jsonb ->> 'startedAt'`)
  return rows.map((row) => ({ ...(JSON.parse(row.value) as BackfillProgress), running: row.running }))
}
