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

describe('capture options', () => {
  it('--columns and --exclude-columns decide what leaves the database, in data and previous_attributes', async () => {
    await db.sql`create table accounts (id int primary key, email text, password_hash text, token text, plan text)`
    await captureTable(db.sql, outbox, { table: 'accounts', entity: 'account', excludeColumns: ['password_hash', 'token'] })
    const since = await lastId()
    await db.sql`insert into accounts values (1, 'a@example.com', 'secret-hash', 'secret-token', 'free')`
    await db.sql`update accounts set password_hash = 'new-hash', plan = 'pro' where id = 1`
    await db.sql`update accounts set token = 'rotated' where id = 1` // only an excluded column: no event
    const events = await eventsSince(since)
    expect(events.map((e) => e.event_type)).toEqual(['account.created', 'account.updated'])
    expect(JSON.stringify(events)).not.toMatch(/secret|new-hash|rotated/)
    expect(events[1]!.payload.previous_attributes).toEqual({ plan: 'free' })

    await captureTable(db.sql, outbox, { table: 'accounts', entity: 'account', columns: ['plan'] })
    const next = await lastId()
    await db.sql`update accounts set email = 'b@example.com' where id = 1` // not a captured column: no event
    await db.sql`update accounts set plan = 'team' where id = 1`
    const only = await eventsSince(next)
    expect(only).toHaveLength(1)
    expect(only[0]!.payload).toEqual({ data: { id: 1, plan: 'team' }, previous_attributes: { plan: 'pro' } })
  })

  it('--soft-delete-column turns setting it into .deleted and clearing it into .restored', async () => {
    await db.sql`create table posts (id int primary key, title text, deleted_at timestamptz)`
    await captureTable(db.sql, outbox, { table: 'posts', entity: 'post', softDeleteColumn: 'deleted_at' })
    const since = await lastId()
    await db.sql`insert into posts values (1, 'hello', null)`
    await db.sql`update posts set deleted_at = now() where id = 1`
    await db.sql`update posts set deleted_at = null where id = 1`
    await db.sql`update posts set title = 'hi' where id = 1`
    expect((await eventsSince(since)).map((e) => e.event_type)).toEqual(['post.created', 'post.deleted', 'post.restored', 'post.updated'])
  })

  it('tables with json, xml or point columns can be captured and updated (no equality operator needed)', async () => {
    await db.sql`create table shapes (id int primary key, doc json, spot point, note text)`
    await captureTable(db.sql, outbox, { table: 'shapes', entity: 'shape' })
    const since = await lastId()
    await db.sql`insert into shapes values (1, '{"a": 1}', point(1, 2), 'x')`
    await db.sql`update shapes set note = 'y' where id = 1`
    await db.sql`update shapes set note = note where id = 1`
    expect((await eventsSince(since)).map((e) => e.event_type)).toEqual(['shape.created', 'shape.updated'])
  })

  it('--events captures a subset; capturing again replaces the options; captures shows them', async () => {
    await db.sql`create table logs (id int primary key, line text)`
    await captureTable(db.sql, outbox, { table: 'logs', entity: 'log', events: ['insert'] })
    const since = await lastId()
    await db.sql`insert into logs values (1, 'a')`
    await db.sql`update logs set line = 'b'`
    await db.sql`delete from logs`
    expect((await eventsSince(since)).map((e) => e.event_type)).toEqual(['log.created'])
    const replaced = await captureTable(db.sql, outbox, { table: 'logs', entity: 'log', events: ['update', 'delete'], ignoreColumns: [] })
    expect(replaced).toMatchObject({ table: 'logs', events: ['update', 'delete'] })
    const next = await lastId()
    await db.sql`insert into logs values (2, 'c')`
    await db.sql`update logs set line = 'd'`
    await db.sql`delete from logs`
    expect((await eventsSince(next)).map((e) => e.event_type)).toEqual(['log.updated', 'log.deleted'])
    await expect(captureTable(db.sql, outbox, { table: 'logs', entity: 'log', events: [] })).rejects.toThrow(/at least one/)
    await expect(captureTable(db.sql, outbox, { table: 'logs', entity: 'log', excludeColumns: ['nope'] })).rejects.toThrow(/has no column nope/)
  })

  it('works on a partitioned table and survives ADD / DROP COLUMN without re-capturing', async () => {
    await db.sql`create table measurements (id int, city text, reading int, primary key (id, city)) partition by list (city)`
    await db.sql`create table measurements_oslo partition of measurements for values in ('oslo')`
    await db.sql`create table measurements_rome partition of measurements for values in ('rome')`
    await captureTable(db.sql, outbox, { table: 'measurements', entity: 'measurement', key: 'id' })
    const since = await lastId()
    await db.sql`insert into measurements values (1, 'oslo', 3), (2, 'rome', 25)`
    await db.sql`alter table measurements add column unit text default 'C'`
    await db.sql`update measurements set reading = reading + 1 where id = 1`
    await db.sql`alter table measurements drop column unit`
    await db.sql`delete from measurements where id = 2`
    const events = await eventsSince(since)
    expect(events.map((e) => [e.event_type, e.entity_id])).toEqual([
      ['measurement.created', '1'], ['measurement.created', '2'], ['measurement.updated', '1'], ['measurement.deleted', '2'],
    ])
    expect(events[2]!.payload.data).toEqual({ id: 1, city: 'oslo', reading: 4, unit: 'C' })
    expect(events[3]!.payload.data).toEqual({ id: 2, city: 'rome', reading: 25 })
    expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'measurements')).toMatchObject({ entity: 'measurement', key: 'id' })
  })

  it('copies the transaction-local event context into metadata; an empty setting means absent', async () => {
    await db.sql`create table if not exists contexts (id int primary key)`
    await captureTable(db.sql, outbox, { table: 'contexts', entity: 'ctx' })
    const since = await lastId()
    await db.sql.begin(async (tx) => {
      await tx`select set_config('outbox.correlation_id', 'req-42', true), set_config('outbox.actor', 'user:7', true), set_config('outbox.metadata', '{"tenant": "acme"}', true), set_config('outbox.causation_id', '', true)`
      await tx`insert into contexts values (1)`
    })
    await db.sql`insert into contexts values (2)`
    const rows = await db.sql<{ metadata: Record<string, string> }[]>`select metadata from outbox where id > ${since}::bigint order by id`
    expect(rows[0]!.metadata).toMatchObject({ correlation_id: 'req-42', actor: 'user:7', tenant: 'acme' })
    expect(rows[0]!.metadata).not.toHaveProperty('causation_id')
    expect(rows[0]!.metadata.txid).toMatch(/^\d+$/)
    expect(Object.keys(rows[1]!.metadata)).toEqual(['txid'])
  })
})
