import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type CaptureMode, type CaptureOptions, captureTable, listCaptures } from '../../src/capture/capture.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

const outbox = outboxTable('public', 'outbox')
let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db.drop()
})

interface Captured {
  event_type: string
  entity_type: string
  entity_id: string
  payload: string
  context: string
}

/**
 * Creates `<name>_row` and `<name>_statement` with the same columns and options, one captured by row and one by
 * statement, runs the same writes on each ($t stands for the table; a list of statements is one transaction) and
 * returns both event lists: payloads as their exact text, the context without the transaction id.
 */
async function sameWrites(name: string, columns: string, options: Omit<CaptureOptions, 'table' | 'mode'>, writes: Array<string | string[]>) {
  const result: Partial<Record<CaptureMode, Captured[]>> = {}
  for (const mode of ['row', 'statement'] as const) {
    const table = `${name}_${mode}`
    await db.sql.unsafe(`create table ${table} (${columns})`)
    await captureTable(db.sql, outbox, { ...options, table, mode })
    const [{ since }] = await db.sql`select coalesce(max(id), 0)::text as since from outbox`
    for (const write of writes) {
      if (typeof write === 'string') await db.sql.unsafe(write.replaceAll('$t', table))
      else await db.sql.begin(async (tx) => { for (const statement of write) await tx.unsafe(statement.replaceAll('$t', table)) }) // one transaction
    }
    result[mode] = await db.sql<Captured[]>`
      select event_type, entity_type, entity_id, payload::text as payload, (metadata - 'txid')::text as context
        from outbox where id > ${since}::bigint order by id`
  }
  return result as Record<CaptureMode, Captured[]>
}

describe('row and statement capture write the same events, byte for byte', () => {
  it('inserts, updates and deletes of one row and of many, no-op updates, a changed key, upserts, an empty statement', async () => {
    const { row, statement } = await sameWrites('plain', 'id int primary key, title text, points numeric, tags jsonb, done boolean default false', { entity: 'plain' }, [
      `insert into $t values (1, 'one', 1.50, '["a", 1]')`,
      `insert into $t (id, title) select n, 'bulk ' || n from generate_series(2, 40) n`,
      `update $t set title = 'edited' where id = 1`,
      `update $t set done = true where id between 5 and 30`,
      `update $t set title = title where id < 10`, // changes nothing: no event
      `update $t set done = not done, title = case when id = 7 then title else 'x' || id end where id in (6, 7, 8)`,
      `update $t set id = id + 100 where id = 2`, // the key changes: paired by position, not by key
      `update $t set title = 'none' where false`,
      `insert into $t values (3, 'again', 3) on conflict (id) do update set title = excluded.title, points = excluded.points`,
      `delete from $t where id between 10 and 20`,
      `delete from $t where id = 1`,
    ])
    expect(row.length).toBe(1 + 39 + 1 + 26 + 3 + 1 + 1 + 11 + 1) // the no-op update and the empty statement emit nothing
    expect(statement).toEqual(row)
    expect(row.find((e) => e.entity_id === '102')).toMatchObject({ event_type: 'plain.updated', payload: '{"data": {"id": 102, "done": false, "tags": null, "title": "bulk 2", "points": null}, "previous_attributes": {"id": 2}}' })
  })

  it('a table with columns named n and o, the names the statement capture gives its transition rows', async () => {
    const { row, statement } = await sameWrites('letters', 'id int primary key, n int, o text', { entity: 'letter' }, [
      `insert into $t values (1, 10, 'a'), (2, null, null)`,
      `update $t set n = n + 1, o = 'b' where id = 1`,
      `delete from $t where id = 2`,
    ])
    expect(statement).toEqual(row)
    expect(statement.map((e) => [e.event_type, e.entity_id, e.payload])).toEqual([
      ['letter.created', '1', '{"data": {"n": 10, "o": "a", "id": 1}}'],
      ['letter.created', '2', '{"data": {"n": null, "o": null, "id": 2}}'],
      ['letter.updated', '1', '{"data": {"n": 11, "o": "b", "id": 1}, "previous_attributes": {"n": 10, "o": "a"}}'],
      ['letter.deleted', '2', '{"data": {"n": null, "o": null, "id": 2}}'],
    ])
  })

  it('an upsert that inserts some rows and updates others: the same events; by statement, the updates come first', async () => {
    const { row, statement } = await sameWrites('upsert', 'id int primary key, title text', { entity: 'upsert' }, [
      `insert into $t values (1, 'one'), (2, 'two')`,
      `insert into $t values (3, 'three'), (1, 'uno'), (4, 'four'), (2, 'dos') on conflict (id) do update set title = excluded.title`,
    ])
    expect(row.slice(2).map((e) => [e.event_type, e.entity_id])).toEqual([['upsert.created', '3'], ['upsert.updated', '1'], ['upsert.created', '4'], ['upsert.updated', '2']])
    // each kind of change has its own statement trigger: PostgreSQL fires the update's before the insert's
    expect(statement.slice(2).map((e) => [e.event_type, e.entity_id])).toEqual([['upsert.updated', '1'], ['upsert.updated', '2'], ['upsert.created', '3'], ['upsert.created', '4']])
    const byEntity = (events: Captured[]) => [...events].sort((a, b) => a.entity_id.localeCompare(b.entity_id) || a.event_type.localeCompare(b.event_type))
    expect(byEntity(statement)).toEqual(byEntity(row))
  })

  it('every column option: ignored, captured, excluded and soft-delete columns, also after renames', async () => {
    const { row, statement } = await sameWrites(
      'options',
      "id int primary key, email text, secret text, plan text, notes text, updated_at timestamptz default '2026-01-01', deleted_at timestamptz",
      { entity: 'account', ignoreColumns: ['updated_at'], columns: ['email', 'plan', 'updated_at', 'deleted_at', 'secret'], excludeColumns: ['secret'], softDeleteColumn: 'deleted_at' },
      [
        `insert into $t (id, email, secret, plan, notes) select n, n || '@example.com', 'SECRET', 'free', 'not captured' from generate_series(1, 10) n`,
        `update $t set updated_at = updated_at + interval '1 hour'`, // only ignored: nothing
        `update $t set notes = 'still not captured'`, // not a captured column: nothing
        `update $t set secret = 'SECRET2'`, // only excluded: nothing
        `update $t set plan = 'pro', updated_at = updated_at + interval '1 minute' where id <= 4`,
        `alter table $t rename column plan to tier`,
        `alter table $t rename column secret to hidden`,
        `update $t set deleted_at = '2026-01-01' where id in (1, 2, 5)`, // .deleted
        `update $t set deleted_at = null, tier = 'team' where id in (1, 3)`, // 1 .restored, 3 .updated
        `update $t set hidden = 'SECRET3', email = 'changed@example.com' where id = 6`,
        `delete from $t where id > 7`,
      ],
    )
    expect(row.map((e) => e.event_type)).toEqual([
      ...Array(10).fill('account.created'), ...Array(4).fill('account.updated'), ...Array(3).fill('account.deleted'), 'account.restored', 'account.updated', 'account.updated',
      ...Array(3).fill('account.deleted'),
    ])
    expect(JSON.stringify(row)).not.toMatch(/SECRET|hidden|secret|notes/)
    expect(statement).toEqual(row)
  })

  it('json values jsonb refuses, non-canonical session settings and the event context', async () => {
    const { row, statement } = await sameWrites(
      'values',
      'id int primary key, doc json, at timestamptz, span interval, raw bytea, ratio float8, note text',
      { entity: 'value' },
      [
        `insert into $t select n, case when n = 3 then '{"s": "a\\u0000b"}'::json else '{"n": 1}'::json end, '2026-03-01 12:00:00+00', '1 day 02:03:04', '\\x00ff', 1::float8 / 3, 'x' from generate_series(1, 5) n`,
        `update $t set note = 'y' where id >= 2`,
        [
          `set local TimeZone = 'Asia/Tokyo'; set local IntervalStyle = 'iso_8601'; set local bytea_output = 'escape'; set local DateStyle = 'SQL, DMY'; set local extra_float_digits = 0`,
          `select set_config('outbox.correlation_id', 'req-1', true), set_config('outbox.actor', 'user:7', true), set_config('outbox.metadata', '{"tenant": "acme"}', true)`,
          `insert into $t values (6, '1e1000000', '2026-03-01 12:00:00+00', '2 days', '\\x01', 0.1, 'z')`,
          `update $t set note = 'w' where id in (1, 6)`,
        ],
        `delete from $t where id <= 3`,
      ],
    )
    expect(row).toHaveLength(5 + 4 + 1 + 2 + 3)
    expect(row[2]!.payload).toContain('"doc": "{\\"s\\": \\"a\\\\u0000b\\"}"')
    expect(row[9]).toMatchObject({ context: '{"actor": "user:7", "tenant": "acme", "correlation_id": "req-1"}' })
    expect(statement).toEqual(row)
  })

  it('a dropped key column fails the write with the same error in both modes', async () => {
    for (const mode of ['row', 'statement'] as const) {
      await db.sql.unsafe(`create table keyed_${mode} (id int primary key, sku text)`)
      await captureTable(db.sql, outbox, { table: `keyed_${mode}`, entity: 'keyed', mode })
      await db.sql.unsafe(`alter table keyed_${mode} drop column id`)
      await expect(db.sql.unsafe(`insert into keyed_${mode} values ('s')`)).rejects.toThrow(
        `captured table public.keyed_${mode} has no key column id any more (dropped): capture it again with another key: outbox-poller capture public.keyed_${mode} --entity keyed --key <column>, or SELECT "public"."outbox_capture_table"('public.keyed_${mode}', 'keyed', '<column>')`,
      )
    }
  })

  it('capture again switches a table between modes; captures shows the mode', async () => {
    await db.sql`create table switched (id int primary key, name text)`
    await captureTable(db.sql, outbox, { table: 'switched', entity: 'switched', mode: 'row' })
    await captureTable(db.sql, outbox, { table: 'switched', entity: 'switched' })
    expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'switched')).toMatchObject({ mode: 'statement', events: ['insert', 'update', 'delete', 'truncate'] })
    const triggers = await db.sql`select tgname from pg_trigger where tgrelid = 'switched'::regclass order by 1`
    expect(triggers.map((t) => t.tgname)).toEqual(['public_outbox_capture_stmt_d', 'public_outbox_capture_stmt_i', 'public_outbox_capture_stmt_t', 'public_outbox_capture_stmt_u'])
    await captureTable(db.sql, outbox, { table: 'switched', entity: 'switched', mode: 'row', events: ['insert'] })
    expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'switched')).toMatchObject({ mode: 'row', events: ['insert'] })
    await expect(captureTable(db.sql, outbox, { table: 'switched', entity: 'switched', mode: 'rows' as CaptureMode })).rejects.toThrow('mode must be one of row, statement, auto (got "rows")')
  })
})
