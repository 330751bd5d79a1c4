import type { Sql } from 'postgres'
import { ConfigError, SqlState, sqlState } from './errors.js'
import type { OutboxTable } from './outbox-table.js'

export interface CaptureOptions {
  /** The table as SQL writes it, optionally schema-qualified: `issues`, `app.orders`, `"Order Items"`. */
  table: string
  /** Entity type: events are `<entity>.created|updated|deleted`. */
  entity: string
  /** Column whose value becomes `entity_id`. Default: the table's single-column primary key. */
  key?: string
  /** Columns whose change alone emits no event (e.g. `updated_at`). */
  ignoreColumns?: readonly string[]
}

export interface CapturedTable {
  /** Qualified, quoted table name. */
  table: string
  entity: string
  key: string
  ignoreColumns: string[]
}

/** Attaches the capture triggers to a table (replacing earlier ones). A missing table or key column is a ConfigError. */
export async function captureTable(sql: Sql, outbox: OutboxTable, options: CaptureOptions): Promise<CapturedTable> {
  if (options.entity.trim() === '') throw new ConfigError('entity must not be empty')
  const target = await resolveTable(sql, options.table)
  const key = options.key ?? (await primaryKeyColumn(sql, target, options.table))
  const ignoreColumns = [...(options.ignoreColumns ?? [])]
  try {
    await sql`select ${sql.unsafe(outbox.captureTableFunction)}(${target}::regclass, ${options.entity}, ${key}, ${ignoreColumns}::text[])`
  } catch (error) {
    if (sqlState(error) === SqlState.undefinedColumn) throw new ConfigError(`cannot capture ${options.table}: ${(error as Error).message}`)
    throw error
  }
  return { table: await regclassName(sql, target), entity: options.entity, key, ignoreColumns }
}

/** Removes the capture triggers from a table. Returns false if it was not captured. */
export async function uncaptureTable(sql: Sql, outbox: OutboxTable, table: string): Promise<boolean> {
  const target = await resolveTable(sql, table)
  const before = await listCaptures(sql, outbox)
  const name = await regclassName(sql, target)
  await sql`select ${sql.unsafe(outbox.uncaptureTableFunction)}(${target}::regclass)`
  return before.some((captured) => captured.table === name)
}

/** Tables whose changes flow into this outbox, read from pg_trigger (the triggers are the truth). */
export async function listCaptures(sql: Sql, outbox: OutboxTable): Promise<CapturedTable[]> {
  const rows = await sql<{ table: string; args: Buffer }[]>`
    select t.tgrelid::regclass::text as table, t.tgargs as args
      from pg_trigger t
     where t.tgfoid = ${outbox.captureFunction}::regproc and t.tgname = ${outbox.captureTrigger}
     order by 1`
  return rows.map((row) => {
    // tgargs holds the trigger's arguments, each ended by a NUL byte.
    const [entity = '', key = '', ignored = '{}'] = row.args.toString('utf8').split('\0')
    return { table: row.table, entity, key, ignoreColumns: parseTextArray(ignored) }
  })
}

/** Resolves a table name as SQL writes it to its oid; PostgreSQL does the parsing, so no name is ever spliced into SQL. */
async function resolveTable(sql: Sql, table: string): Promise<string> {
  try {
    const [row] = await sql<{ oid: string }[]>`select ${table}::regclass::oid::text as oid`
    const [kind] = await sql<{ relkind: string }[]>`select relkind from pg_class where oid = ${row!.oid}::oid`
    if (!['r', 'p'].includes(kind!.relkind)) throw new ConfigError(`${table} is not a table`)
    return row!.oid
  } catch (error) {
    const state = sqlState(error)
    if (state === SqlState.undefinedTable || state === SqlState.invalidSchemaName) throw new ConfigError(`table ${table} does not exist`)
    if (state === SqlState.invalidName || state === SqlState.syntaxError) {
      throw new ConfigError(`${JSON.stringify(table)} is not a valid table name (write it as SQL does: issues, app.orders, '"Order Items"')`)
    }
    throw error
  }
}

async function regclassName(sql: Sql, oid: string): Promise<string> {
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
