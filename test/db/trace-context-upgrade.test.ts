import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { withEventContext } from '../../src/capture/emit.js'
import { migrate } from '../../src/outbox/migrate.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'
let db: TestDatabase

// Captured at 0005 (the release before trace context), by statement and by row, then upgraded.
beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  await migrate({ sql: db.sql, target: '0005_capture_at_the_floor' })
  await db.sql`create table by_statement (id int primary key, name text)`
  await db.sql`create table by_row (id int primary key, name text)`
  await db.sql`select outbox_capture_table('by_statement', 'stmt', 'id')`
  await db.sql`select outbox_capture_table('by_row', 'row', 'id', mode => 'row')`
})
afterAll(async () => {
  await db.drop()
})

/** One write per table in a transaction with the given context; the metadata of the events it captured. */
async function write(id: number, context: Parameters<typeof withEventContext>[1]) {
  const [{ since }] = await db.sql`select coalesce(max(id), 0)::text as since from outbox`
  await db.sql.begin(async (tx) => {
    await withEventContext(tx, context)
    await tx`insert into by_statement values (${id}, 'a')`
    await tx`insert into by_row values (${id}, 'a')`
    await tx`update by_row set name = 'b' where id = ${id}`
  })
  return db.sql<{ event_type: string; metadata: Record<string, unknown> }[]>`select event_type, metadata from outbox where id > ${since}::bigint order by id`
}

describe('upgrading to trace context', () => {
  it('tables captured before keep capturing, with the same context, and their events now carry the traceparent', async () => {
    const before = await write(1, { correlationId: 'c-1', traceparent })
    expect(before.map((row) => row.event_type)).toEqual(['stmt.created', 'row.created', 'row.updated'])
    expect(before.every((row) => row.metadata.correlation_id === 'c-1' && !('traceparent' in row.metadata))).toBe(true)

    expect((await migrate({ sql: db.sql })).applied).toContain('0006_trace_context')

    const after = await write(2, { correlationId: 'c-1', traceparent })
    expect(after.map((row) => row.event_type)).toEqual(['stmt.created', 'row.created', 'row.updated'])
    for (const row of after) expect(row.metadata).toMatchObject({ correlation_id: 'c-1', traceparent })
    // a transaction with no outbox.* setting: only its transaction id, as before
    const plain = await write(3, {})
    for (const row of plain) expect(Object.keys(row.metadata)).toEqual(['txid'])
    // only the traceparent set: the context is worked out on the slow path, and still holds nothing else
    const only = await write(4, { traceparent })
    for (const row of only) expect(Object.keys(row.metadata).sort()).toEqual(['traceparent', 'txid'])
  })
})
