import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { captureTable, listCaptures } from '../../src/capture/capture.js'
import { lostCaptures } from '../../src/capture/capture-registry.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxCheckOrdering } from '../../src/outbox/outbox-checks.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

const outbox = outboxTable('public', 'outbox')
let db: TestDatabase

// Captured at 0006 (the release before TRUNCATE was captured), as that release's capture did: every row event by
// statement and by row, an events subset, and a table dropped since. Beside it, an outbox whose pollers order by entity.
beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  await migrate({ sql: db.sql, target: '0006_trace_context' })
  for (const table of ['by_statement', 'by_row', 'subset', 'gone']) await db.sql.unsafe(`create table ${table} (id int primary key, name text)`)
  await db.sql`select outbox_capture_table('by_statement', 'stmt', 'id')`
  await db.sql`select outbox_capture_table('by_row', 'row', 'id', mode => 'row')`
  await db.sql`select outbox_capture_table('subset', 'sub', 'id', events => '{insert,update}')`
  await db.sql`select outbox_capture_table('gone', 'gone', 'id')`
  await db.sql`drop table gone`
  await db.sql`create schema ordered`
  await migrate({ sql: db.sql, schema: 'ordered', target: '0006_trace_context' })
  await db.sql`insert into ordered.outbox_settings (name, value) values ('ordering', 'entity, on dead: continue')`
  await db.sql`create index outbox_entity_pending on ordered.outbox (entity_type, entity_id, id) where processed_at is null`
})
afterAll(async () => {
  await db.drop()
})

async function write(id: number) {
  const [{ since }] = await db.sql`select coalesce(max(id), 0)::text as since from outbox`
  for (const table of ['by_statement', 'by_row', 'subset']) {
    await db.sql.unsafe(`insert into ${table} values (${id}, 'a')`)
    await db.sql.unsafe(`update ${table} set name = 'b' where id = ${id}`)
    await db.sql.unsafe(`delete from ${table} where id = ${id}`)
  }
  await db.sql`truncate by_statement, by_row, subset`
  return db.sql<{ event_type: string; payload: string }[]>`select event_type, payload::text as payload from outbox where id > ${since}::bigint order by id`
}

describe('upgrading to captured TRUNCATE', () => {
  it('tables captured with every row event now capture TRUNCATE, an events subset stays as it was, and migrate says so in one line', async () => {
    const before = await write(1)
    expect(before.map((e) => e.event_type)).toEqual(['stmt.created', 'stmt.updated', 'stmt.deleted', 'row.created', 'row.updated', 'row.deleted', 'sub.created', 'sub.updated'])

    // this release's code on the database before its migration: captures list as they are; TRUNCATE needs 0007
    expect((await listCaptures(db.sql, outbox)).map((c) => c.events.join(','))).toEqual(['insert,update,delete', 'insert,update,delete', 'insert,update'])
    await expect(captureTable(db.sql, outbox, { table: 'subset', entity: 'sub' })).rejects.toThrow(
      'outbox "public"."outbox" cannot capture TRUNCATE before migration 0007_capture_truncate: run `outbox-poller migrate` first (or leave truncate out of events)',
    )

    const migrated = await runCli(['migrate'], { DATABASE_URL: db.url })
    expect(migrated.stdout.split('\n')).toEqual([
      expect.stringMatching(/^applied to "public"."outbox": 0007_capture_truncate(, |$)/),
      'TRUNCATE is now captured on by_row, by_statement (handlers of <entity>.* get <entity>.truncated events); subset keep their --events subset (capture again with truncate among --events to add it)',
      '',
    ])

    const after = await write(1) // the tables were truncated: the same rows again
    expect(after.slice(0, before.length)).toEqual(before) // the same row events, byte for byte
    expect(after.slice(before.length).map((e) => [e.event_type, JSON.parse(e.payload).table]).sort()).toEqual([['row.truncated', 'by_row'], ['stmt.truncated', 'by_statement']])
    expect((await listCaptures(db.sql, outbox)).map((c) => [c.table, c.mode, c.events.join(',')])).toEqual([
      ['by_row', 'row', 'insert,update,delete,truncate'],
      ['by_statement', 'statement', 'insert,update,delete,truncate'],
      ['subset', 'statement', 'insert,update'],
    ])
    // the dropped table is still reported, and renewed as the live ones now capture
    const lost = await lostCaptures(db.sql, outbox)
    expect(lost.map((c) => [c.table, c.problem, c.events.join(',')])).toEqual([['public.gone', 'dropped', 'insert,update,delete,truncate']])
    expect(lost[0]!.recapture).toEqual({
      command: 'outbox-poller capture public.gone --entity gone --key id',
      sql: `SELECT "public"."outbox_capture_table"('public.gone', 'gone', 'id', '{}', '{}', '{}', NULL, '{insert,update,delete,truncate}')`,
    })
  })

  it('an outbox ordered by entity gets the barrier index from a plain migrate, and its ordered pollers start', async () => {
    const ordered = outboxTable('ordered', 'outbox')
    const order = { ordering: 'entity', onDead: 'continue' } as const
    await expect(outboxCheckOrdering(db.sql, ordered, order)).rejects.toThrow('--ordering entity needs the index "ordered"."outbox_truncated_pending", which this outbox lacks')
    expect(await migrate({ sql: db.sql, schema: 'ordered' })).toMatchObject({ applied: expect.arrayContaining(['0007_capture_truncate']), orderingIndex: 'created' })
    await outboxCheckOrdering(db.sql, ordered, order)
  })

  it('a staged migration that stops before the settings table exists still completes (no recorded ordering to look up)', async () => {
    await db.sql`create schema staged`
    expect(await migrate({ sql: db.sql, schema: 'staged', target: '0002_suspects' })).toEqual({ applied: ['0001_outbox', '0002_suspects'] })
  })
})
