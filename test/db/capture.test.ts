import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type CaptureOptions, captureTable as captureTableIn, captureTriggerNames, listCaptures, uncaptureTable } from '../../src/capture/capture.js'
import { lostCaptures } from '../../src/capture/capture-registry.js'
import { ConfigError } from '../../src/errors.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

const outbox = outboxTable('public', 'outbox')

// Every behaviour, in both modes: by row, and by statement over transition tables (capture-modes.test.ts compares
// their payloads byte for byte). Partitioned tables are captured with the mode auto, which takes row for them.
describe.each(['row', 'statement'] as const)('captured by %s', (mode) => {
let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db.drop()
})

const captureTable = (sql: typeof db.sql, into: typeof outbox, options: CaptureOptions) => captureTableIn(sql, into, { mode, ...options })

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
      expect(captures.find((c) => c.table === 'issues')).toMatchObject({ entity: 'issue', key: 'id', ignoreColumns: ['updated_at'], mode })
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
      if (mode === 'statement') {
        await expect(captureTable(db.sql, outbox, { table: 'measurements', entity: 'measurement', key: 'id' })).rejects.toThrow(
          new ConfigError('cannot capture measurements: table public.measurements is partitioned or inherited: capture it by row (--mode row), since a statement trigger never sees the writes made directly to a partition or child'),
        )
      }
      await captureTable(db.sql, outbox, { table: 'measurements', entity: 'measurement', key: 'id', mode: 'auto' })
      expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'measurements')!.mode).toBe('row')
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

  describe('capture options survive renames and drops', () => {
    it('a renamed excluded column never leaks, nor one dropped and re-added under its name; a dropped one is just gone', async () => {
      await db.sql`create table users (id int primary key, email text, password_hash text)`
      await captureTable(db.sql, outbox, { table: 'users', entity: 'user', excludeColumns: ['password_hash'] })
      const since = await lastId()
      await db.sql`alter table users rename column password_hash to pw_hash`
      await db.sql`insert into users values (1, 'a@example.com', 'SECRET1')`
      await db.sql`update users set pw_hash = 'SECRET2', email = 'b@example.com' where id = 1`
      await db.sql`update users set pw_hash = 'SECRET3' where id = 1` // only the excluded column: no event
      expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'users')!.excludeColumns).toEqual(['pw_hash'])
      await db.sql`alter table users add column password_hash text` // a new column under the excluded name
      await db.sql`insert into users values (2, 'c@example.com', 'SECRET4', 'SECRET5')`
      await db.sql`alter table users drop column pw_hash`
      await db.sql`insert into users values (3, 'd@example.com', 'SECRET6')`
      const events = await eventsSince(since)
      expect(events.map((e) => [e.event_type, e.entity_id])).toEqual([['user.created', '1'], ['user.updated', '1'], ['user.created', '2'], ['user.created', '3']])
      expect(JSON.stringify(events)).not.toMatch(/SECRET|pw_hash|password_hash/)
      expect(events[1]!.payload.previous_attributes).toEqual({ email: 'a@example.com' })
    })

    it('ignored, captured and soft-delete columns follow renames; captures shows the current names', async () => {
      await db.sql`create table docs (id int primary key, title text, body text, touched_at timestamptz, gone_at timestamptz)`
      await captureTable(db.sql, outbox, { table: 'docs', entity: 'doc', columns: ['title', 'touched_at', 'gone_at'], ignoreColumns: ['touched_at'], softDeleteColumn: 'gone_at' })
      await db.sql`alter table docs rename column title to heading`
      await db.sql`alter table docs rename column touched_at to seen_at`
      await db.sql`alter table docs rename column gone_at to removed_at`
      expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'docs')).toMatchObject({
        key: 'id', columns: ['id', 'heading', 'seen_at', 'removed_at'], ignoreColumns: ['seen_at'], softDeleteColumn: 'removed_at',
      })
      await db.sql`insert into docs values (1, 'hello', 'not captured', now(), null)`
      const since = await lastId()
      await db.sql`update docs set seen_at = now() + interval '1 minute'` // only ignored: no event
      await db.sql`update docs set body = 'still not captured'` // not a captured column: no event
      await db.sql`update docs set removed_at = now()`
      const events = await eventsSince(since)
      expect(events.map((e) => e.event_type)).toEqual(['doc.deleted'])
      expect(Object.keys(events[0]!.payload.data).sort()).toEqual(['heading', 'id', 'removed_at', 'seen_at'])
    })

    it('the key follows a rename; a dropped key fails the write with the table, the column and the fixing command', async () => {
      await db.sql`create table parts (id int primary key, sku text unique, name text)`
      await captureTable(db.sql, outbox, { table: 'parts', entity: 'part' })
      await db.sql`alter table parts rename column id to part_id`
      const since = await lastId()
      await db.sql`insert into parts values (1, 'P-1', 'bolt')`
      await db.sql`update parts set name = 'nut'`
      await db.sql`delete from parts`
      expect((await eventsSince(since)).map((e) => [e.event_type, e.entity_id])).toEqual([['part.created', '1'], ['part.updated', '1'], ['part.deleted', '1']])
      expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'parts')!.key).toBe('part_id')

      await db.sql`alter table parts drop column part_id`
      const failed = db.sql`insert into parts values ('P-2', 'washer')`
      await expect(failed).rejects.toThrow('captured table public.parts has no key column id any more (dropped): capture it again with another key: outbox-poller capture public.parts --entity part --key <column>, or SELECT "public"."outbox_capture_table"(\'public.parts\', \'part\', \'<column>\')')
      expect((await lostCaptures(db.sql, outbox)).find((c) => c.table === 'parts')).toMatchObject({ problem: 'key-dropped', recapture: { command: `outbox-poller capture parts --entity part --key <column>${mode === 'row' ? ' --mode row' : ''}` } })
      await captureTable(db.sql, outbox, { table: 'parts', entity: 'part', key: 'sku' })
      await db.sql`insert into parts values ('P-2', 'washer')`
      expect((await eventsSince(since)).at(-1)).toMatchObject({ event_type: 'part.created', entity_id: 'P-2' })
      expect((await lostCaptures(db.sql, outbox)).map((c) => c.table)).not.toContain('parts')
    })

    it("a partition whose column numbers differ from its parent's follows the parent's options through renames", async () => {
      await db.sql`create table ledger (id int, region text, secret text, amount int, primary key (id, region)) partition by list (region)`
      await db.sql`create table ledger_eu (amount int, filler int, secret text, region text not null, id int not null)` // another order, a dropped column
      await db.sql`alter table ledger_eu drop column filler`
      await db.sql`alter table ledger attach partition ledger_eu for values in ('eu')`
      await captureTable(db.sql, outbox, { table: 'ledger', entity: 'entry', key: 'id', excludeColumns: ['secret'], mode: 'auto' })
      await db.sql`alter table ledger rename column secret to hidden`
      await db.sql`alter table ledger rename column id to entry_id`
      const since = await lastId()
      await db.sql`insert into ledger values (1, 'eu', 'SECRET', 5)`
      const events = await eventsSince(since)
      expect(events.map((e) => [e.event_type, e.entity_id, e.payload.data])).toEqual([['entry.created', '1', { entry_id: 1, region: 'eu', amount: 5 }]])
    })
  })

  describe('registry of captured tables', () => {
    it('reports a table dropped and re-created, one that lost its triggers and one dropped; uncapture forgets them', async () => {
      await db.sql`create table orders (id int primary key, total int)`
      await db.sql`create table carts (id int primary key)`
      await db.sql`create table baskets (id int primary key)`
      for (const [table, entity] of [['orders', 'order'], ['carts', 'cart'], ['baskets', 'basket']]) await captureTable(db.sql, outbox, { table: table!, entity: entity!, ignoreColumns: table === 'orders' ? ['total'] : [] })
      await db.sql`drop table orders`
      await db.sql`create table orders (id int primary key, total int)`
      for (const trigger of captureTriggerNames(outbox)) await db.sql`drop trigger if exists ${db.sql(trigger)} on carts`
      await db.sql`drop table baskets`
      const lost = await lostCaptures(db.sql, outbox)
      expect(lost.map((c) => [c.table, c.problem])).toEqual([['carts', 'untriggered'], ['orders', 'recreated'], ['public.baskets', 'dropped']])
      expect(lost[1]!.recapture).toEqual({
        command: `outbox-poller capture orders --entity order --key id --ignore-columns total${mode === 'row' ? ' --mode row' : ''}`,
        sql: `SELECT "public"."outbox_capture_table"('public.orders', 'order', 'id', '{total}', '{}', '{}', NULL, '{insert,update,delete,truncate}'${mode === 'row' ? ", 'row'" : ''})`,
      })
      await db.sql.unsafe(lost[1]!.recapture.sql) // the SQL call renews it, as a migration that re-creates the table would
      expect(await uncaptureTable(db.sql, outbox, 'carts')).toBe(true)
      expect(await uncaptureTable(db.sql, outbox, 'baskets')).toBe(true) // gone: only forgotten
      await expect(uncaptureTable(db.sql, outbox, 'baskets')).rejects.toThrow(new ConfigError('table baskets does not exist'))
      expect((await lostCaptures(db.sql, outbox)).map((c) => c.table)).toEqual([])
      const since = await lastId()
      await db.sql`insert into orders values (1, 10)`
      expect((await eventsSince(since)).map((e) => e.event_type)).toEqual(['order.created'])
    })

    it('reports a table restored from a dump (a new oid, its triggers restored with it), to be captured again', async () => {
      await db.sql`create table restored (id int primary key)`
      await captureTable(db.sql, outbox, { table: 'restored', entity: 'restored' })
      await db.sql`update outbox_captured set relid = 1 where table_name = 'restored'` // what pg_restore leaves: the old oid
      expect((await lostCaptures(db.sql, outbox)).map((c) => [c.table, c.problem])).toEqual([['restored', 'restored']])
      await captureTable(db.sql, outbox, { table: 'restored', entity: 'restored' })
      expect(await lostCaptures(db.sql, outbox)).toEqual([])
    })
  })

  describe('payload values', () => {
    it('a json value jsonb refuses (\\u0000, a number beyond numeric) is carried as its JSON text; the write is never rejected', async () => {
      await db.sql`create table blobs (id int primary key, doc json, docs json[], note text)`
      await captureTable(db.sql, outbox, { table: 'blobs', entity: 'blob' })
      const since = await lastId()
      // literals, so the driver cannot turn the text into a JSON string
      await db.sql.unsafe(`insert into blobs values (1, '{"s": "a\\u0000b"}', null, 'x')`)
      await db.sql`update blobs set note = 'y'`
      await db.sql.unsafe(`insert into blobs values (2, '1e1000000', array['{"t": "\\u0000"}'::json], 'z')`)
      await db.sql`insert into blobs values (3, '{"fine": [1, 2]}', null, 'w')`
      await db.sql`delete from blobs where id = 1`
      const events = await eventsSince(since)
      expect(events.map((e) => e.event_type)).toEqual(['blob.created', 'blob.updated', 'blob.created', 'blob.created', 'blob.deleted'])
      expect(events[0]!.payload.data).toEqual({ id: 1, doc: '{"s": "a\\u0000b"}', docs: null, note: 'x' })
      expect(events[1]!.payload.previous_attributes).toEqual({ note: 'x' })
      expect(events[2]!.payload.data).toEqual({ id: 2, doc: '1e1000000', docs: '[{"t": "\\u0000"}]', note: 'z' })
      expect(events[3]!.payload.data.doc).toEqual({ fine: [1, 2] })
      expect(events[4]!.payload.data.doc).toBe('{"s": "a\\u0000b"}')
    })

    it('the payload is the same whatever the writing session sets; its settings are left as they were', async () => {
      await db.sql`create table samples (id int primary key, at timestamptz, span interval, raw bytea, ratio float8, day date, period tstzrange)`
      await captureTable(db.sql, outbox, { table: 'samples', entity: 'sample' })
      const since = await lastId()
      const values = (id: number) => db.sql`(${id}, '2026-03-01 12:00:00+00', '1 day 02:03:04', '\\x00ff', 1::float8 / 3, '2026-03-01', tstzrange('2026-03-01 00:00+00', '2026-03-02 00:00+00'))`
      await db.sql`insert into samples values ${values(1)}`
      const settings = ["TimeZone = 'Asia/Tokyo'", "IntervalStyle = 'iso_8601'", "bytea_output = 'escape'", "DateStyle = 'SQL, DMY'", 'extra_float_digits = 0']
      const shown = await db.sql.begin(async (tx) => {
        for (const setting of settings) await tx.unsafe(`set local ${setting}`)
        await tx`insert into samples values ${values(2)}`
        return tx`select current_setting('TimeZone') as tz, current_setting('IntervalStyle') as style, current_setting('bytea_output') as bytea, current_setting('DateStyle') as dates, current_setting('extra_float_digits') as digits`
      })
      expect(shown[0]).toEqual({ tz: 'Asia/Tokyo', style: 'iso_8601', bytea: 'escape', dates: 'SQL, DMY', digits: '0' })
      const [first, second] = await eventsSince(since)
      expect(second!.payload).toEqual({ data: { ...first!.payload.data, id: 2 } })
      expect(first!.payload.data).toEqual({
        id: 1, at: '2026-03-01T12:00:00+00:00', span: '1 day 02:03:04', raw: '\\x00ff', ratio: 0.3333333333333333, day: '2026-03-01',
        period: '["2026-03-01 00:00:00+00","2026-03-02 00:00:00+00")',
      })
    })
  })

  describe('event context', () => {
    it('outbox.metadata that is not a JSON object fails the write with an error naming the setting', async () => {
      await db.sql`create table if not exists contexts (id int primary key)`
      await captureTable(db.sql, outbox, { table: 'contexts', entity: 'ctx' })
      for (const metadata of ['{bad', '[1,2]', '"x"', 'null', '42']) {
        const write = db.sql.begin(async (tx) => {
          await tx`select set_config('outbox.metadata', ${metadata}, true)`
          await tx`insert into contexts values (100)`
        })
        await expect(write, metadata).rejects.toThrow(/^outbox\.metadata must be a JSON object \(got /)
      }
      await expect(db.sql`select outbox_emit('a.b', 'a', '1', '{}', '[1]')`).rejects.toThrow(/^metadata must be a JSON object/)
      const [{ count }] = await db.sql`select count(*)::int as count from contexts where id = 100`
      expect(count).toBe(0)
    })
  })
})
