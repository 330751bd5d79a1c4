import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listCaptures } from '../../src/capture/capture.js'
import { lostCaptures } from '../../src/capture/capture-registry.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

const outbox = outboxTable('public', 'outbox')
let db: TestDatabase

// An outbox at the release before column numbers: tables captured there carry column names in their triggers.
beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  await migrate({ sql: db.sql, target: '0003_ordering_and_emit' })
  await db.sql`create table users (id int primary key, email text, password_hash text, updated_at timestamptz)`
  await db.sql`select outbox_capture_table('users', 'user', 'id', '{updated_at}', '{}', '{password_hash}')`
  await db.sql`create table items (id int primary key, name text, secret text)`
  await db.sql`select outbox_capture_table('items', 'item', 'id', '{}', '{name}', '{}', null, '{insert,update}')`
})
afterAll(async () => {
  await db.drop()
})

async function payloadsAfter(id: number) {
  const rows = await db.sql<{ entity_id: string; payload: any }[]>`select entity_id, payload from outbox where id > ${id} order by id`
  return rows.map((row) => ({ entity_id: row.entity_id, payload: row.payload }))
}
async function lastId() {
  const [row] = await db.sql<{ id: number }[]>`select coalesce(max(id), 0)::int as id from outbox`
  return row!.id
}

describe('migrate upgrades existing captures', () => {
  it('before the upgrade, status and captures say to run migrate (exit 2) instead of failing on the missing registry', async () => {
    for (const command of ['status', 'captures']) {
      const result = await runCli([command], { DATABASE_URL: db.url })
      expect(result.code, command).toBe(2)
      expect(result.stderr, command).toMatch(/^outbox-poller: outbox table "public"."outbox" needs newer migrations: run `outbox-poller migrate` first\n$/)
    }
  })

  it('a table captured before the upgrade keeps capturing, and its excluded column stops leaking after a rename', async () => {
    expect((await migrate({ sql: db.sql })).applied).toEqual(expect.arrayContaining(['0004_capture_follows_columns', '0005_capture_at_the_floor']))
    expect(await lostCaptures(db.sql, outbox)).toEqual([]) // registered by the upgrade
    const since = await lastId()
    await db.sql`insert into users values (1, 'a@example.com', 'SECRET1', now())`
    await db.sql`alter table users rename column password_hash to pw_hash`
    await db.sql`insert into users values (2, 'b@example.com', 'SECRET2', now())`
    await db.sql`update users set pw_hash = 'SECRET3', email = 'c@example.com' where id = 1`
    const events = await payloadsAfter(since)
    expect(events.map((e) => e.entity_id)).toEqual(['1', '2', '1'])
    expect(JSON.stringify(events)).not.toMatch(/SECRET|pw_hash|password_hash/)
    expect(events[2]!.payload.previous_attributes).toEqual({ email: 'a@example.com' })
    expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'users')).toMatchObject({ key: 'id', ignoreColumns: ['updated_at'], excludeColumns: ['pw_hash'] })
  })

  it('its key and captured columns follow renames after the upgrade', async () => {
    await db.sql`alter table items rename column id to item_id`
    await db.sql`alter table items rename column name to title`
    const since = await lastId()
    await db.sql`insert into items values (7, 'seven', 'hidden')`
    await db.sql`update items set title = 'SEVEN' where item_id = 7`
    expect(await payloadsAfter(since)).toEqual([
      { entity_id: '7', payload: { data: { item_id: 7, title: 'seven' } } },
      { entity_id: '7', payload: { data: { item_id: 7, title: 'SEVEN' }, previous_attributes: { title: 'seven' } } },
    ])
    expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'items')).toMatchObject({ key: 'item_id', columns: ['item_id', 'title'], events: ['insert', 'update'] })
  })
})
