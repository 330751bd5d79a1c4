import type { Sql } from 'postgres'
import { quoteIdent } from '../../outbox/outbox-table.js'

/**
 * The floor's minimal outbox, of the shared floors' shape: a primary key and one partial index on pending
 * rows, none of the outbox's other columns and indexes. What our table and claim cost per event is the
 * difference between a drain of it and a bare loop over our own table.
 */
export async function createFloorTable(sql: Sql, schema: string): Promise<string> {
  const table = `${quoteIdent(schema)}.bare_outbox`
  await sql.unsafe(`create table if not exists ${table} (id bigint generated always as identity primary key, event_id uuid not null default gen_random_uuid(),
    event_type text not null, entity_type text not null, entity_id text, payload jsonb not null, processed_at timestamptz,
    created_at timestamptz not null default now())`)
  await sql.unsafe(`create index if not exists bare_outbox_pending on ${table} (id) where processed_at is null`)
  return table
}
