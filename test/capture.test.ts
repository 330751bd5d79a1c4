import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { captureTable, listCaptures, uncaptureTable } from '../src/capture.js'
import { ConfigError } from '../src/errors.js'
import { migrate } from '../src/migrate.js'
import { outboxTable } from '../src/outbox-table.js'
import { createTestDatabase, type TestDatabase } from './support/database.js'

const outbox = outboxTable('public', 'outbox')
let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db.drop()
})

async function eventsSince(id: string) {
  return db.sql<{ id: string; event_type: string; entity_type: string; entity_id: string; payload: any }[]>`
    select id::text, event_type, entity_type, entity_id, payload from outbox where id > ${id}::bigint order by id`
}
async function lastId() {
  const [row] = await db.sql<{ id: string }[]>`select coalesce(max(id), 0)::text as id from outbox`
  return row!.id
}

describe('capture triggers', () => {
  beforeAll(async () => {
    await db.sql`create table issues (id serial primary key, title text, points numeric, tags jsonb, done boolean default false, updated_at timestamptz default now())`
    await captureTable(db.sql, outbox, { table: 'issues', entity: 'issue', ignoreColumns: ['updated_at'] })
  })

  it('an insert emits <entity>.created with the whole row as data, JSON types kept', async () => {
    const since = await lastId()
    await db.sql`insert into issues (title, points, tags) values ('first', 3.5, '["a", 1]')`
    const [event, ...rest] = await eventsSince(since)
    expect(rest).toHaveLength(0)
    expect(event!.event_type).toBe('issue.created')
    expect(event!.entity_type).toBe('issue')
    expect(event!.payload.data).toMatchObject({ title: 'first', points: 3.5, tags: ['a', 1], done: false })
    expect(event!.entity_id).toBe(String(event!.payload.data.id))
    expect(event!.payload).not.toHaveProperty('previous_attributes')
  })

  it('an update emits <entity>.updated with only the changed columns in previous_attributes', async () => {
    const [{ id }] = await db.sql`insert into issues (title, points) values ('before', 1) returning id`
    const since = await lastId()
    await db.sql`update issues set title = 'after', done = true, updated_at = now() + interval '1 minute' where id = ${id}`
    const events = await eventsSince(since)
    expect(events).toHaveLength(1)
    expect(events[0]!.event_type).toBe('issue.updated')
    expect(events[0]!.payload.data).toMatchObject({ id, title: 'after', done: true })
    expect(events[0]!.payload.previous_attributes).toEqual({ title: 'before', done: false })
  })

  it('a delete emits <entity>.deleted with the old row', async () => {
    const [{ id }] = await db.sql`insert into issues (title) values ('doomed') returning id`
    const since = await lastId()
    await db.sql`delete from issues where id = ${id}`
    const events = await eventsSince(since)
    expect(events.map((e) => e.event_type)).toEqual(['issue.deleted'])
    expect(events[0]!.payload.data).toMatchObject({ id, title: 'doomed' })
    expect(events[0]!.entity_id).toBe(String(id))
  })

  it('updates that change nothing, or only ignored columns, emit no event', async () => {
    const [{ id }] = await db.sql`insert into issues (title) values ('same') returning id`
    const since = await lastId()
    await db.sql`update issues set title = title where id = ${id}`
    await db.sql`update issues set updated_at = now() + interval '1 hour' where id = ${id}`
    expect(await eventsSince(since)).toHaveLength(0)
    await db.sql`update issues set title = 'changed', updated_at = now() where id = ${id}`
    const events = await eventsSince(since)
    expect(events).toHaveLength(1)
    expect(Object.keys(events[0]!.payload.previous_attributes)).toEqual(['title'])
  })

  it('a multi-row statement emits one event per row, in the same transaction as the write', async () => {
    const since = await lastId()
    await db.sql.begin(async (tx) => {
      await tx`insert into issues (title) select 'bulk ' || n from generate_series(1, 50) n`
      await tx`select 1/0`.catch(() => {})
    }).catch(() => {})
    expect(await eventsSince(since)).toHaveLength(0) // rolled back with the business write
    await db.sql`insert into issues (title) select 'bulk ' || n from generate_series(1, 50) n`
    expect(await eventsSince(since)).toHaveLength(50)
  })

  it('a failed capture fails the business write (no event silently dropped)', async () => {
    await db.sql`create table nullable_keys (id int, name text)`
    await captureTable(db.sql, outbox, { table: 'nullable_keys', entity: 'thing', key: 'id' })
    await expect(db.sql`insert into nullable_keys (id, name) values (null, 'no id')`).rejects.toThrow(/entity_id/)
    const [{ count }] = await db.sql`select count(*)::int as count from nullable_keys`
    expect(count).toBe(0)
  })
})

describe('capture, uncapture, captures', () => {
  it('handles hostile and schema-qualified table names without splicing them into SQL', async () => {
    await db.sql`create schema app`
    await db.sql`create table app.orders (order_no text primary key, total int)`
    await db.sql`create table "Order Items" (sku text primary key, qty int)`
    await db.sql`create table """; drop table issues; --" (id int primary key)`
    await captureTable(db.sql, outbox, { table: 'app.orders', entity: 'order' })
    await captureTable(db.sql, outbox, { table: '"Order Items"', entity: 'order_item' })
    await captureTable(db.sql, outbox, { table: '"""; drop table issues; --"', entity: 'weird' })
    const since = await lastId()
    await db.sql`insert into app.orders values ('A-1', 10)`
    await db.sql`insert into "Order Items" values ('sku-1', 2)`
    await db.sql`insert into """; drop table issues; --" values (7)`
    const events = await eventsSince(since)
    expect(events.map((e) => [e.event_type, e.entity_id])).toEqual([
      ['order.created', 'A-1'],
      ['order_item.created', 'sku-1'],
      ['weird.created', '7'],
    ])
    await expect(db.sql`select count(*) from issues`).resolves.toBeDefined() // still there
    const captures = await listCaptures(db.sql, outbox)
    expect(captures.map((c) => c.table)).toEqual(expect.arrayContaining(['app.orders', '"Order Items"', '"""; drop table issues; --"', 'issues']))
    expect(captures.find((c) => c.table === 'issues')).toMatchObject({ entity: 'issue', key: 'id', ignoreColumns: ['updated_at'] })
  })

  it('refuses a missing table, an invalid name, a missing key column and a table without a single-column key', async () => {
    await expect(captureTable(db.sql, outbox, { table: 'nope', entity: 'x' })).rejects.toThrow(new ConfigError('table nope does not exist'))
    await expect(captureTable(db.sql, outbox, { table: '"; drop table x; --', entity: 'x' })).rejects.toThrow(ConfigError)
    await expect(captureTable(db.sql, outbox, { table: 'issues', entity: 'issue', key: 'nope' })).rejects.toThrow(/has no column/)
    await db.sql`create table keyless (a int)`
    await expect(captureTable(db.sql, outbox, { table: 'keyless', entity: 'k' })).rejects.toThrow(/no primary key: name the entity id column with --key/)
    await expect(captureTable(db.sql, outbox, { table: 'issues', entity: ' ' })).rejects.toThrow(/entity must not be empty/)
  })

  it('uncapture stops the events and says whether the table was captured', async () => {
    await db.sql`create table notes (id int primary key)`
    await captureTable(db.sql, outbox, { table: 'notes', entity: 'note' })
    expect(await uncaptureTable(db.sql, outbox, 'notes')).toBe(true)
    expect(await uncaptureTable(db.sql, outbox, 'notes')).toBe(false)
    const since = await lastId()
    await db.sql`insert into notes values (1)`
    expect(await eventsSince(since)).toHaveLength(0)
  })

  it('captures into an outbox of another schema and table name', async () => {
    await migrate({ sql: db.sql, schema: 'tenant_1', table: 'Events Out' })
    const tenantOutbox = outboxTable('tenant_1', 'Events Out')
    await db.sql`create table tenant_1.items (id int primary key)`
    await captureTable(db.sql, tenantOutbox, { table: 'tenant_1.items', entity: 'item' })
    await db.sql`insert into tenant_1.items values (1)`
    const rows = await db.sql`select event_type from tenant_1."Events Out"`
    expect(rows.map((r) => r.event_type)).toEqual(['item.created'])
    expect((await listCaptures(db.sql, tenantOutbox)).map((c) => c.table)).toEqual(['tenant_1.items'])
  })
})

describe('wake-up signal', () => {
  it('writers notify only while a poller has raised the sleep flag', async () => {
    await db.sql`create table pings (id int primary key)`
    await captureTable(db.sql, outbox, { table: 'pings', entity: 'ping' })
    const listener = (await import('postgres')).default(db.url, { max: 1 })
    let notifications = 0
    await listener.listen(outbox.channel, () => notifications++)
    await db.sql`update outbox_wakeup set asleep = false`
    await db.sql`insert into pings values (1)`
    await db.sql`update outbox_wakeup set asleep = true`
    await db.sql`insert into pings values (2)`
    await db.sql`insert into pings values (3)`
    const deadline = Date.now() + 5000
    while (notifications < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    expect(notifications).toBe(2)
    await db.sql`update outbox_wakeup set asleep = false`
    await listener.end()
  })
})
