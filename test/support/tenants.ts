import type { Sql } from 'postgres'
import { captureTable } from '../../src/capture/capture.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable, quoteIdent } from '../../src/outbox/outbox-table.js'

/**
 * A tenant schema as the multi-tenant setup builds it from its template: the schema, its outbox (migrated)
 * and an `orders (id, note)` table captured as entity `order` into it.
 */
export async function createTenant(sql: Sql, schema: string): Promise<void> {
  await sql.unsafe(`create schema ${quoteIdent(schema)}`)
  await migrate({ sql, schema })
  await sql.unsafe(`create table ${quoteIdent(schema)}.orders (id int primary key, note text)`)
  await captureTable(sql, outboxTable(schema, 'outbox'), { table: `${quoteIdent(schema)}.orders`, entity: 'order' })
}

/** `tenant_0001`, `tenant_0002`, …: sortable names. */
export function tenantName(n: number, prefix = 'tenant_'): string {
  return `${prefix}${String(n).padStart(4, '0')}`
}

/** Writes `count` orders into the tenant's table from id `from` on (each one event in its outbox). */
export async function writeOrders(sql: Sql, schema: string, count: number, from = 1): Promise<void> {
  await sql.unsafe(`insert into ${quoteIdent(schema)}.orders (id, note) select g, 'order ' || g from generate_series($1::int, $2::int) g`, [from, from + count - 1])
}

/** Events of the tenant's outbox not yet processed (dead ones included). */
export async function tenantUnprocessed(sql: Sql, schema: string): Promise<number> {
  return (await sql.unsafe(`select count(*)::int as n from ${quoteIdent(schema)}.outbox where processed_at is null`))[0]!.n as number
}
