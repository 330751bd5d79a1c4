import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { captureTable, listCaptures } from '../../src/capture/capture.js'
import { emit } from '../../src/capture/emit.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { fixturePath, runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

let db: TestDatabase
const outbox = outboxTable('public', 'outbox')

// Captured at 0006 (the release before groups), by statement and by row, with a role allowed to emit; then upgraded.
beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  await migrate({ sql: db.sql, target: '0006_trace_context' })
  await db.sql`create table by_statement (id int primary key, order_id int)`
  await db.sql`create table by_row (id int primary key, order_id int)`
  await db.sql`select outbox_capture_table('by_statement', 'stmt', 'id', columns => '{id}')`
  await db.sql`select outbox_capture_table('by_row', 'row', 'id', mode => 'row')`
  await db.sql`drop role if exists group_upgrade_writer`
  await db.sql`create role group_upgrade_writer`
  await db.sql`grant execute on function outbox_emit(text, text, text, jsonb, jsonb) to group_upgrade_writer`
})
afterAll(async () => {
  await db.sql`drop owned by group_upgrade_writer`
  await db.sql`drop role group_upgrade_writer`
  await db.drop()
})

/** An insert, update and delete on each table; the events they captured. */
async function write(id: number) {
  const [{ since }] = await db.sql`select coalesce(max(id), 0)::text as since from outbox`
  for (const table of ['by_statement', 'by_row']) {
    await db.sql.unsafe(`insert into ${table} values ($1, 1)`, [id])
    await db.sql.unsafe(`update ${table} set order_id = 2 where id = $1`, [id])
    await db.sql.unsafe(`delete from ${table} where id = $1`, [id])
  }
  return db.sql<{ event_type: string; payload: { data: Record<string, unknown> } }[]>`select * from outbox where id > ${since}::bigint order by id`
}

describe('upgrading to groups', () => {
  it('a worker waits for the migration; tables captured before keep capturing as they did, without a group; then a capture names one; emit keeps its grants', async () => {
    const before = await write(1)
    const early = await runCli(['--handlers', fixturePath('record-handler.js')], { DATABASE_URL: db.url })
    expect([early.code, early.stderr.split('\n')[0]]).toEqual([2, 'outbox-poller: outbox table "public"."outbox" needs newer migrations: run `outbox-poller migrate` first'])
    const shape = (rows: Awaited<ReturnType<typeof write>>) => rows.map((row) => [row.event_type, row.payload.data])
    expect((await migrate({ sql: db.sql })).applied).toContain('0008_group_key')

    const after = await write(1)
    expect(shape(after)).toEqual(shape(before)) // the same events, the column options kept (by_statement sends only id)
    expect(after).toHaveLength(5) // by_statement sends only id: its update changed nothing it sends
    expect(after.every((row) => (row as unknown as { group_key: string | null }).group_key === null)).toBe(true)
    const captures = await listCaptures(db.sql, outbox)
    expect(captures.map((c) => [c.table, c.mode, c.columns, c.groupBy])).toEqual([['by_row', 'row', [], null], ['by_statement', 'statement', ['id'], null]])

    await captureTable(db.sql, outbox, { table: 'by_row', entity: 'row', mode: 'row', groupBy: 'order_id' })
    await captureTable(db.sql, outbox, { table: 'by_statement', entity: 'stmt', columns: ['id'], groupBy: 'order_id' })
    const grouped = await write(2) // the group column travels now: by_statement's update is an event
    expect(grouped.map((row) => [row.event_type, (row as unknown as { group_key: string | null }).group_key])).toEqual([
      ['stmt.created', '1'], ['stmt.updated', '2'], ['stmt.deleted', '2'], ['row.created', '1'], ['row.updated', '2'], ['row.deleted', '2'],
    ])

    // the role allowed to emit before may emit with a group, and still without
    await db.sql.begin(async (tx) => {
      await tx`set local role group_upgrade_writer`
      await emit(tx, { event_type: 'order.paid', entity_type: 'order', entity_id: '1', group_key: '1' }, outbox)
      await emit(tx, { event_type: 'order.noted', entity_type: 'order', entity_id: '1' }, outbox)
    })
    expect((await db.sql`select group_key from outbox where entity_type = 'order' order by id`).map((row) => row.group_key)).toEqual(['1', null])
  })
})
