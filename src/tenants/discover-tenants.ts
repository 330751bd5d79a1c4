import type { Sql } from 'postgres'
import { schemaPatternToLike } from './schema-pattern.js'

/** A schema that matches the patterns, and the state of its outbox. */
export interface DiscoveredSchema {
  schema: string
  /** The outbox table exists. */
  hasOutbox: boolean
  /** It has the latest migrations' objects (see outboxCheckExists). */
  current: boolean
}

/**
 * `outboxDiscoverSchemas`: every schema whose name matches one of `patterns`, in name order, with whether it
 * holds the outbox `table` (and is migrated). One catalog query, however many tenants.
 */
export async function outboxDiscoverSchemas(sql: Sql, patterns: readonly string[], table: string): Promise<DiscoveredSchema[]> {
  const rows = await sql<Array<{ schema: string; has_outbox: boolean; current: boolean }>>`
    select n.nspname as schema,
           to_regclass(format('%I.%I', n.nspname, ${table}::text)) is not null as has_outbox,
           to_regclass(format('%I.%I', n.nspname, ${table}::text || '_settings')) is not null
             and to_regclass(format('%I.%I', n.nspname, ${table}::text || '_captured')) is not null
             and exists (select 1 from pg_attribute a where a.attrelid = to_regclass(format('%I.%I', n.nspname, ${table}::text))
                            and a.attname = 'group_key' and not a.attisdropped) as current
      from pg_namespace as n
     where n.nspname like any(${patterns.map(schemaPatternToLike)}::text[])
     order by n.nspname`
  return rows.map((row) => ({ schema: row.schema, hasOutbox: row.has_outbox, current: row.current }))
}
