import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backfill } from '../../src/backfill/backfill.js'
import { captureTable, listCaptures } from '../../src/capture/capture.js'
import { emit } from '../../src/capture/emit.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

let db: TestDatabase
const outbox = outboxTable('public', 'outbox')

beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db.drop()
})

async function eventsSince(since: string) {
  return db.sql<{ event_type: string; entity_id: string; group_key: string | null }[]>`select event_type, entity_id, group_key from outbox where id > ${since}::bigint order by id`
}
const lastId = async () => (await db.sql<{ id: string }[]>`select coalesce(max(id), 0)::text as id from outbox`)[0]!.id

describe('capture --group-by', () => {
  for (const mode of ['row', 'statement'] as const) {
    it(`by ${mode}: every event carries the group; an update the new one, a delete the old one; a NULL group column gives none`, async () => {
      const table = `lines_${mode}`
      await db.sql.unsafe(`create table ${table} (id int primary key, order_id bigint, sku text)`)
      const captured = await runCli(['capture', table, '--entity', 'line', '--group-by', 'order_id', '--mode', mode], { DATABASE_URL: db.url })
      expect(captured.stdout).toBe(`capturing ${table} as line.created|updated|deleted|truncated (key id; group by order_id) by ${mode} into "public"."outbox"\n`)
      const since = await lastId()
      await db.sql.unsafe(`insert into ${table} values (1, 10, 'a'), (2, null, 'b')`)
      await db.sql.unsafe(`update ${table} set sku = 'c' where id = 1`)
      await db.sql.unsafe(`update ${table} set order_id = 11 where id = 1`) // the line moves to order 11
      await db.sql.unsafe(`update ${table} set order_id = 12 where id = 2`)
      await db.sql.unsafe(`delete from ${table} where id in (1, 2)`)
      expect(await eventsSince(since)).toEqual([
        { event_type: 'line.created', entity_id: '1', group_key: '10' },
        { event_type: 'line.created', entity_id: '2', group_key: null },
        { event_type: 'line.updated', entity_id: '1', group_key: '10' },
        { event_type: 'line.updated', entity_id: '1', group_key: '11' },
        { event_type: 'line.updated', entity_id: '2', group_key: '12' },
        { event_type: 'line.deleted', entity_id: '1', group_key: '11' },
        { event_type: 'line.deleted', entity_id: '2', group_key: '12' },
      ])
    })
  }

  for (const mode of ['row', 'statement'] as const) {
    it(`by ${mode}: a group column of any type gives the value as the payload renders it, as text; retyped under the capture, the new type's`, async () => {
      await db.sql.unsafe(`create domain group_code_${mode} as text check (value <> '')`)
      const columns: Record<string, [string, string, string]> = {
        // column: [type, SQL value, group_key]
        j: ['jsonb', `'{"b": 1, "a": [1, 2]}'`, '{"a": [1, 2], "b": 1}'],
        js: ['jsonb', `'"1"'`, '1'],
        n: ['numeric', '123456789012345678901234567890.000100', '123456789012345678901234567890.000100'],
        t: ['text', `'ünï 😀'`, 'ünï 😀'],
        u: ['uuid', `'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'`, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'],
        b: ['bytea', `'\\x00ff'`, '\\x00ff'],
        a: ['int[]', `'{1,2}'`, '[1, 2]'],
        d: [`group_code_${mode}`, `'dom'`, 'dom'],
        ts: ['timestamptz', `'2026-12-02 23:59:59.999+00'`, '2026-12-02T23:59:59.999+00:00'],
      }
      for (const [column, [type, value, expected]] of Object.entries(columns)) {
        const table = `odd_${column}_${mode}`
        await db.sql.unsafe(`create table ${table} (id int primary key, g ${type})`)
        await captureTable(db.sql, outbox, { table, entity: table, groupBy: 'g', mode })
        const since = await lastId()
        await db.sql.unsafe(`set local timezone = 'Asia/Kolkata'; insert into ${table} values (1, ${value})`)
        expect((await eventsSince(since)).map((e) => e.group_key), type).toEqual([expected])
      }
      await db.sql.unsafe(`alter table odd_n_${mode} alter column g type text using g::text`)
      const since = await lastId()
      await db.sql.unsafe(`insert into odd_n_${mode} values (2, '1.0')`)
      expect((await eventsSince(since)).map((e) => e.group_key)).toEqual(['1.0'])
    })
  }

  it('the group follows RENAME COLUMN, works with column options, and a dropped group column leaves events without one', async () => {
    await db.sql`create table tickets (id int primary key, account text, secret text, note text)`
    await captureTable(db.sql, outbox, { table: 'tickets', entity: 'ticket', groupBy: 'account', columns: ['note', 'secret'], excludeColumns: ['secret'], ignoreColumns: ['note'] })
    await db.sql`alter table tickets rename column account to tenant`
    expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'tickets')).toMatchObject({ groupBy: 'tenant', columns: ['id', 'tenant', 'secret', 'note'] }) // the key and the group always travel
    const since = await lastId()
    await db.sql`insert into tickets values (1, 'acme', 's', 'n')`
    await db.sql`update tickets set note = 'm' where id = 1` // ignored: no event
    await db.sql`update tickets set tenant = 'other' where id = 1`
    await db.sql`alter table tickets drop column tenant`
    await db.sql`update tickets set secret = 't' where id = 1` // excluded: no event either
    await db.sql`delete from tickets where id = 1`
    expect(await eventsSince(since)).toEqual([
      { event_type: 'ticket.created', entity_id: '1', group_key: 'acme' },
      { event_type: 'ticket.updated', entity_id: '1', group_key: 'other' },
      { event_type: 'ticket.deleted', entity_id: '1', group_key: null },
    ])
    expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'tickets')!.groupBy).toBeNull()
  })

  it('a group column that does not exist is refused in one line; a capture without --group-by has no group', async () => {
    await db.sql`create table plain_lines (id int primary key, order_id int)`
    const refused = await runCli(['capture', 'plain_lines', '--entity', 'line', '--group-by', 'nope'], { DATABASE_URL: db.url })
    expect([refused.code, refused.stderr]).toEqual([2, 'outbox-poller: cannot capture plain_lines: table public.plain_lines has no column nope\n'])
    expect((await listCaptures(db.sql, outbox)).some((c) => c.table === 'plain_lines')).toBe(false)
    const excluded = await runCli(['capture', 'plain_lines', '--entity', 'line', '--group-by', 'order_id', '--exclude-columns', 'order_id'], { DATABASE_URL: db.url })
    expect([excluded.code, excluded.stderr]).toEqual([2, 'outbox-poller: cannot capture plain_lines: the group column order_id cannot be excluded: every event carries its value as group_key\n'])
    await captureTable(db.sql, outbox, { table: 'plain_lines', entity: 'line' })
    const since = await lastId()
    await db.sql`insert into plain_lines values (1, 5)`
    expect(await eventsSince(since)).toEqual([{ event_type: 'line.created', entity_id: '1', group_key: null }])
    expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'plain_lines')!.groupBy).toBeNull()
  })

  it('a lost capture is renewed with its group, by command and by SQL', async () => {
    await db.sql`create table lost_lines (id int primary key, order_id int)`
    await captureTable(db.sql, outbox, { table: 'lost_lines', entity: 'line', groupBy: 'order_id', mode: 'row' })
    await db.sql`drop table lost_lines`
    await db.sql`create table lost_lines (id int primary key, order_id int)`
    const listed = await runCli(['captures'], { DATABASE_URL: db.url })
    expect(listed.stdout).toContain('capture it again: outbox-poller capture lost_lines --entity line --key id --mode row --group-by order_id')
    const call = listed.stdout.split('\n').find((line) => line.includes('in the migration that re-creates it'))!.replace(/^.*re-creates it: /, '')
    await db.sql.unsafe(call)
    expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'lost_lines')).toMatchObject({ groupBy: 'order_id', mode: 'row' })
  })

  it('backfill writes each snapshot with its row\'s group', async () => {
    await db.sql`create table orders_lines (id int primary key, order_id int)`
    await captureTable(db.sql, outbox, { table: 'orders_lines', entity: 'order_line', groupBy: 'order_id' })
    await db.sql`insert into orders_lines values (1, 7), (2, null), (3, 8)`
    const since = await lastId()
    await backfill(db.sql, 'orders_lines', { outbox })
    expect(await eventsSince(since)).toEqual([
      { event_type: 'order_line.snapshot', entity_id: '1', group_key: '7' },
      { event_type: 'order_line.snapshot', entity_id: '2', group_key: null },
      { event_type: 'order_line.snapshot', entity_id: '3', group_key: '8' },
    ])
  })
})

describe('emit with a group', () => {
  it('an explicit event carries the group it is given, or none', async () => {
    const since = await lastId()
    await db.sql.begin(async (tx) => {
      await emit(tx, { event_type: 'order.paid', entity_type: 'order', entity_id: '7', group_key: '7' }, outbox)
      await emit(tx, { event_type: 'order.noted', entity_type: 'order', entity_id: '7' }, outbox)
      await emit(tx, { event_type: 'order.noted', entity_type: 'order', entity_id: '7', group_key: null }, outbox)
    })
    expect(await eventsSince(since)).toEqual([
      { event_type: 'order.paid', entity_id: '7', group_key: '7' },
      { event_type: 'order.noted', entity_id: '7', group_key: null },
      { event_type: 'order.noted', entity_id: '7', group_key: null },
    ])
  })
})
