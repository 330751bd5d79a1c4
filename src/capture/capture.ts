import type { Sql } from 'postgres'
import { ConfigError, SqlState, sqlState } from '../errors.js'
import { outboxCheckExists } from '../outbox/outbox-checks.js'
import type { OutboxTable } from '../outbox/outbox-table.js'

export interface CaptureOptions {
  /** The table as SQL writes it, optionally schema-qualified: `issues`, `app.orders`, `"Order Items"`. */
  table: string
  /** Entity type: events are `<entity>.created|updated|deleted|truncated`. */
  entity: string
  /** Column whose value becomes `entity_id`. Default: the table's single-column primary key. */
  key?: string
  /** Columns whose change alone emits no event (e.g. `updated_at`). */
  ignoreColumns?: readonly string[]
  /** Capture only these columns (the key column always travels too). Default: all. */
  columns?: readonly string[]
  /** Columns that never leave the database, in `data` or `previous_attributes` (e.g. `password_hash`). */
  excludeColumns?: readonly string[]
  /** An update that sets this column emits `<entity>.deleted`; one that clears it, `<entity>.restored`. */
  softDeleteColumn?: string
  /**
   * Which changes to capture. `truncate`: one `<entity>.truncated` event per TRUNCATE of the table. At least one of
   * insert, update, delete. Default: all four.
   */
  events?: ReadonlyArray<CaptureEvent>
  /**
   * `row`: one trigger call per changed row; `statement`: one per statement, set-based over its transition tables
   * (not for partitioned or inherited tables); `auto`: statement where PostgreSQL allows it, else row. The events
   * and payloads are the same in every mode. Default: `auto`.
   */
  mode?: CaptureModeOption
  /**
   * A column whose value every event of this table carries as its `group_key` (as text; NULL when the row's value
   * is NULL), e.g. `order_id` on order lines: `--ordering group` pollers handle one group's events in order. A
   * delete carries the old row's group, an insert or update the new row's. Like the key, it is captured whatever
   * `columns` says, and it cannot be among `excludeColumns`. Default: none.
   */
  groupBy?: string
}

/** How the capture triggers are attached; `auto` resolves to one of the other two. */
export type CaptureMode = 'row' | 'statement'
export type CaptureModeOption = CaptureMode | 'auto'
export const captureModes: readonly CaptureModeOption[] = ['row', 'statement', 'auto']

export type CaptureEvent = 'insert' | 'update' | 'delete' | 'truncate'
export const captureEvents: readonly CaptureEvent[] = ['insert', 'update', 'delete', 'truncate']
const rowEvents: readonly CaptureEvent[] = ['insert', 'update', 'delete']

export interface CapturedTable {
  /** Qualified, quoted table name. */
  table: string
  entity: string
  key: string
  ignoreColumns: string[]
  columns: string[]
  excludeColumns: string[]
  softDeleteColumn: string | null
  events: CaptureEvent[]
  mode: CaptureMode
  /** The group column, or null. */
  groupBy: string | null
}

/** SQLSTATE 0A000: statement mode asked for a partitioned or inherited table. */
const featureNotSupported = '0A000'
/** SQLSTATE 22023: options that contradict each other (the group column among the excluded ones). */
const invalidParameterValue = '22023'

/** Attaches the capture triggers to a table (replacing earlier ones). A missing outbox, table or key column is a ConfigError. */
export async function captureTable(sql: Sql, outbox: OutboxTable, options: CaptureOptions): Promise<CapturedTable> {
  if (options.entity.trim() === '') throw new ConfigError('entity must not be empty')
  await outboxCheckExists(sql, outbox)
  const target = await resolveTable(sql, options.table)
  const key = options.key ?? (await primaryKeyColumn(sql, target, options.table))
  const events = [...(options.events ?? captureEvents)]
  for (const event of events) if (!captureEvents.includes(event)) throw new ConfigError(`events must be among ${captureEvents.join(', ')} (got ${JSON.stringify(event)})`)
  // the table's options live on its row or statement triggers: the truncate trigger alone could not carry them
  if (!events.some((event) => rowEvents.includes(event))) throw new ConfigError('events must name at least one of insert, update, delete')
  const mode = options.mode ?? 'auto'
  if (!captureModes.includes(mode)) throw new ConfigError(`mode must be one of ${captureModes.join(', ')} (got ${JSON.stringify(mode)})`)
  const list = (values?: readonly string[]) => [...(values ?? [])]
  if (events.includes('truncate')) await checkTruncateCapture(sql, outbox)
  try {
    await sql`select ${sql.unsafe(outbox.captureTableFunction)}(${target}::regclass, ${options.entity}, ${key}, ${list(options.ignoreColumns)}::text[],
      ${list(options.columns)}::text[], ${list(options.excludeColumns)}::text[], ${options.softDeleteColumn ?? null}::text, ${events}::text[], ${mode}::text, ${options.groupBy ?? null}::text)`
  } catch (error) {
    const state = sqlState(error)
    if (state === SqlState.undefinedColumn || state === featureNotSupported || state === invalidParameterValue) throw new ConfigError(`cannot capture ${options.table}: ${(error as Error).message}`)
    throw error
  }
  const name = await regclassName(sql, target)
  return (await listCaptures(sql, outbox)).find((captured) => captured.table === name)!
}

/** Capturing TRUNCATE needs migration 0007 (its trigger function); an outbox without it is told to migrate. */
async function checkTruncateCapture(sql: Sql, outbox: OutboxTable): Promise<void> {
  const [row] = await sql<{ exists: boolean }[]>`select to_regproc(${outbox.captureTruncateFunction}) is not null as exists`
  if (!row!.exists) throw new ConfigError(`outbox ${outbox.qualified} cannot capture TRUNCATE before migration 0007_capture_truncate: run \`outbox-poller migrate\` first (or leave truncate out of events)`)
}

/**
 * Removes the capture triggers from a table and forgets it. A table that no longer exists is only forgotten
 * (the registry stops reporting it). Returns false if it was not captured.
 */
export async function uncaptureTable(sql: Sql, outbox: OutboxTable, table: string): Promise<boolean> {
  await outboxCheckExists(sql, outbox)
  const target = await findTable(sql, table)
  if (target === undefined) {
    if (await forgetCapture(sql, outbox, table)) return true
    throw new ConfigError(`table ${table} does not exist`)
  }
  const before = await listCaptures(sql, outbox)
  const name = await regclassName(sql, target)
  const registered = await sql`
    select 1 from ${sql.unsafe(outbox.captured)} as r join pg_class c on c.oid = ${target}::oid join pg_namespace n on n.oid = c.relnamespace
     where r.relid = c.oid or (r.table_schema, r.table_name) = (n.nspname, c.relname)`
  await sql`select ${sql.unsafe(outbox.uncaptureTableFunction)}(${target}::regclass)`
  return before.some((captured) => captured.table === name) || registered.length > 0
}

/** Forgets a registered table that no longer exists, named as SQL writes it. Returns whether one was registered. */
async function forgetCapture(sql: Sql, outbox: OutboxTable, table: string): Promise<boolean> {
  const rows = await sql`
    delete from ${sql.unsafe(outbox.captured)} as r
     using (select parse_ident(${table}) as part) as name
     where case cardinality(name.part)
             when 1 then r.table_name = name.part[1] and r.table_schema = any (current_schemas(false))
             when 2 then (r.table_schema, r.table_name) = (name.part[1], name.part[2])
             else false end
    returning 1`
  return rows.length > 0
}

/**
 * Tables whose changes flow into this outbox, read from pg_trigger (the triggers are the truth), with their
 * columns' current names: the triggers hold column numbers, so options follow RENAME COLUMN.
 */
export async function listCaptures(sql: Sql, outbox: OutboxTable): Promise<CapturedTable[]> {
  // the truncate trigger (which carries only the entity) sorts last, so the options come from a row or statement trigger
  const rows = await sql<{ table: string; args: Buffer; type: number; truncate: boolean; names: Record<string, string> | null }[]>`
    select t.tgrelid::regclass::text as table, t.tgargs as args, t.tgtype::int as type, t.tgfoid is not distinct from to_regproc(${outbox.captureTruncateFunction}) as truncate,
           (select json_object_agg(a.attnum, a.attname) from pg_attribute a where a.attrelid = t.tgrelid and a.attnum > 0 and not a.attisdropped) as names
      from pg_trigger t
     where t.tgfoid in (${outbox.captureFunction}::regproc, ${outbox.captureRowsFunction}::regproc, to_regproc(${outbox.captureTruncateFunction}))
       and t.tgname = any (${captureTriggerNames(outbox)}::text[]) and t.tgparentid = 0
     order by 1, 4, t.tgname`
  const byTable = new Map<string, CapturedTable>()
  for (const row of rows) {
    const captured = byTable.get(row.table)
    if (row.truncate) {
      // a truncate trigger left alone (the others dropped by hand) is no capture: the lost-capture report tells
      captured?.events.push('truncate')
      continue
    }
    // tgtype bits: 1 row (else statement), 4 insert, 8 delete, 16 update
    const table = captured ?? { table: row.table, ...readTriggerArguments(row.args, row.names ?? {}), events: [], mode: row.type & 1 ? 'row' : 'statement' }
    if (row.type & 4) table.events.push('insert')
    if (row.type & 16) table.events.push('update')
    if (row.type & 8) table.events.push('delete')
    byTable.set(row.table, table)
  }
  for (const captured of byTable.values()) captured.events.sort((a, b) => captureEvents.indexOf(a) - captureEvents.indexOf(b))
  return [...byTable.values()]
}

/** The names the capture triggers of either mode take on a captured table. */
export function captureTriggerNames(outbox: OutboxTable): string[] {
  return ['', '_update', '_stmt_i', '_stmt_u', '_stmt_d', '_stmt_t'].map((suffix) => outbox.captureTrigger + suffix)
}

/**
 * tgargs holds the trigger's arguments, each ended by a NUL byte (see the capture function in
 * sql/migrations/0005_capture_at_the_floor.sql and 0008_group_key.sql); column numbers become the columns' current names.
 */
function readTriggerArguments(args: Buffer, names: Record<string, string>): Omit<CapturedTable, 'table' | 'events' | 'mode'> {
  // argument 9, the group column, exists since 0008_group_key
  const [entity = '', , key = '0', keyName = '', ignored = '{}', columns = '', excluded = '{}', excludedNames = '{}', softDelete = '', group = ''] = args.toString('utf8').split('\0')
  const named = (numbers: string) => parseTextArray(numbers).flatMap((n) => (names[n] === undefined ? [] : [names[n]!]))
  return {
    entity,
    key: names[key] ?? keyName,
    ignoreColumns: named(ignored),
    columns: columns === '' ? [] : named(columns),
    // excluded by number, and by the names they had: shown when a column has such a name now
    excludeColumns: [...new Set([...named(excluded), ...parseTextArray(excludedNames).filter((name) => Object.values(names).includes(name))])],
    softDeleteColumn: softDelete === '' ? null : (names[softDelete] ?? null),
    groupBy: group === '' ? null : (names[group] ?? null),
  }
}

/** Resolves a table name as SQL writes it to its oid; PostgreSQL does the parsing, so no name is ever spliced into SQL. */
export async function resolveTable(sql: Sql, table: string): Promise<string> {
  const oid = await findTable(sql, table)
  if (oid === undefined) throw new ConfigError(`table ${table} does not exist`)
  return oid
}

/** The table's oid, or undefined when no such table exists; an invalid name or another kind of relation is a ConfigError. */
async function findTable(sql: Sql, table: string): Promise<string | undefined> {
  try {
    const [row] = await sql<{ oid: string }[]>`select ${table}::regclass::oid::text as oid`
    const [kind] = await sql<{ relkind: string }[]>`select relkind from pg_class where oid = ${row!.oid}::oid`
    if (!['r', 'p'].includes(kind!.relkind)) throw new ConfigError(`${table} is not a table`)
    return row!.oid
  } catch (error) {
    const state = sqlState(error)
    if (state === SqlState.undefinedTable || state === SqlState.invalidSchemaName) return undefined
    if (state === SqlState.invalidName || state === SqlState.syntaxError) {
      throw new ConfigError(`${JSON.stringify(table)} is not a valid table name (write it as SQL does: issues, app.orders, '"Order Items"')`)
    }
    throw error
  }
}

export async function regclassName(sql: Sql, oid: string): Promise<string> {
  const [row] = await sql<{ name: string }[]>`select ${oid}::oid::regclass::text as name`
  return row!.name
}

async function primaryKeyColumn(sql: Sql, oid: string, table: string): Promise<string> {
  const columns = await sql<{ name: string }[]>`
    select a.attname as name
      from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
     where i.indrelid = ${oid}::oid and i.indisprimary`
  if (columns.length !== 1) {
    throw new ConfigError(`table ${table} has ${columns.length === 0 ? 'no primary key' : 'a composite primary key'}: name the entity id column with --key`)
  }
  return columns[0]!.name
}

/** Reads a one-dimensional text[] literal such as {updated_at,"Odd ""name"""}. */
function parseTextArray(literal: string): string[] {
  const inner = literal.replace(/^\{|\}$/g, '')
  if (inner === '') return []
  const items: string[] = []
  const pattern = /"((?:[^"\\]|\\.)*)"|([^,]+)/g
  for (const match of inner.matchAll(pattern)) items.push(match[1] !== undefined ? match[1].replace(/\\(.)/g, '$1') : match[2]!)
  return items
}
