import type { Sql, TransactionSql } from 'postgres'
import { type CapturedTable, captureEvents, captureTriggerNames } from './capture.js'
import type { OutboxTable } from '../outbox/outbox-table.js'

/** What happened to a registered table whose changes no longer flow as they were captured. */
export type LostCaptureProblem = 'dropped' | 'recreated' | 'untriggered' | 'restored' | 'key-dropped'

/** A table in the registry of captured tables whose capture was lost (or breaks its writes), and how to renew it. */
export interface LostCapture extends CapturedTable {
  problem: LostCaptureProblem
  /** One line for people: what is wrong and what it means. */
  reason: string
  /** The same capture again, as a command and as the SQL call for the application's own migrations. */
  recapture: { command: string; sql: string }
}

const reasons: Record<LostCaptureProblem, string> = {
  dropped: 'was dropped: nothing is captured from it (if that was meant, forget it with uncapture)',
  recreated: 'was dropped and re-created without its capture triggers: its changes are not captured',
  untriggered: 'lost its capture triggers: its changes are not captured',
  restored: 're-created with its capture triggers (restored from a dump?): capture it again so its column options follow the new table',
  'key-dropped': 'lost its key column: every write to it fails until it is captured with another key',
}

interface RegistryRow {
  table: string
  entity: string
  // mode: absent before the statement mode existed, 'row' since for those tables; group_by: absent before groups existed
  options: { key: string; ignore_columns: string[]; columns: string[] | null; exclude_columns: string[]; soft_delete_column: string | null; events: CapturedTable['events']; mode?: CapturedTable['mode']; group_by?: string | null }
  problem: LostCaptureProblem
  sql: string
}

/**
 * The registered captured tables that were dropped, re-created or lost their triggers (a DROP TABLE takes the
 * triggers with it, silently), or whose key column was dropped. One catalog read per registered table.
 */
export async function lostCaptures(sql: Sql | TransactionSql, outbox: OutboxTable): Promise<LostCapture[]> {
  const rows = await sql<RegistryRow[]>`
    select coalesce(current.oid::regclass::text, registered.name) as table, r.entity, r.options, state.problem,
           format('SELECT %s(%L, %L, %L, %L, %L, %L, %L, %L%s%s)', ${outbox.captureTableFunction}::text, registered.name, r.entity,
                  case when state.problem = 'key-dropped' then '<column>' else r.options ->> 'key' end,
                  array(select jsonb_array_elements_text(r.options -> 'ignore_columns')),
                  array(select jsonb_array_elements_text(coalesce(nullif(r.options -> 'columns', 'null'), '[]'))),
                  array(select jsonb_array_elements_text(r.options -> 'exclude_columns')), r.options ->> 'soft_delete_column',
                  array(select jsonb_array_elements_text(r.options -> 'events')),
                  case when r.options ->> 'mode' = 'row' then ', ''row''' else '' end,
                  case when r.options ->> 'group_by' is not null then format(', group_column => %L', r.options ->> 'group_by') else '' end) as sql
      from ${sql.unsafe(outbox.captured)} as r
     cross join lateral (select format('%I.%I', r.table_schema, r.table_name) as name) as registered
      left join lateral (
           -- the same table (perhaps renamed), else a table now under the registered name
           select c.oid, exists (select 1 from pg_trigger t where t.tgrelid = c.oid
                                    and t.tgfoid in (${outbox.captureFunction}::text::regproc, ${outbox.captureRowsFunction}::text::regproc)
                                    and t.tgname = any (${captureTriggerNames(outbox)}::text[])) as triggered
             from pg_class c
            where c.oid = coalesce((select oid from pg_class where oid = r.relid), to_regclass(registered.name)::oid)) as current on true
     cross join lateral (select case
             when current.oid is null then 'dropped'
             when not current.triggered then case when current.oid = r.relid then 'untriggered' else 'recreated' end
             when current.oid <> r.relid then 'restored'
             when not exists (select 1 from pg_attribute a where a.attrelid = r.relid and a.attnum = (r.options ->> 'key_attnum')::int2 and not a.attisdropped) then 'key-dropped'
           end as problem) as state
     where state.problem is not null
     order by 1`
  return rows.map(lostCapture)
}

function lostCapture(row: RegistryRow): LostCapture {
  const { options: o, problem } = row
  const captured: CapturedTable = {
    table: row.table,
    entity: row.entity,
    key: o.key,
    ignoreColumns: o.ignore_columns,
    columns: o.columns ?? [],
    excludeColumns: o.exclude_columns,
    softDeleteColumn: o.soft_delete_column,
    events: o.events,
    mode: o.mode ?? 'row',
    groupBy: o.group_by ?? null,
  }
  return { ...captured, problem, reason: reasons[problem], recapture: { command: recaptureCommand(captured, problem), sql: row.sql } }
}

/** The `capture` command that renews a capture, with its options as they were (a dropped key: `--key <column>`). */
function recaptureCommand(c: CapturedTable, problem: LostCaptureProblem): string {
  const words = ['outbox-poller capture', shellWord(c.table), '--entity', shellWord(c.entity), '--key', problem === 'key-dropped' ? '<column>' : shellWord(c.key)]
  const list = (flag: string, values: readonly string[]) => (values.length > 0 ? [flag, shellWord(values.join(','))] : [])
  words.push(...list('--ignore-columns', c.ignoreColumns), ...list('--columns', c.columns), ...list('--exclude-columns', c.excludeColumns))
  if (c.softDeleteColumn !== null) words.push('--soft-delete-column', shellWord(c.softDeleteColumn))
  if (c.events.length < captureEvents.length) words.push('--events', c.events.join(','))
  if (c.mode === 'row') words.push('--mode', 'row') // the default, auto, may choose statement
  if (c.groupBy !== null) words.push('--group-by', shellWord(c.groupBy))
  return words.join(' ')
}

function shellWord(word: string): string {
  return /^[\w.,:@%+=/-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`
}
