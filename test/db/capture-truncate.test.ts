import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { captureTable, listCaptures, uncaptureTable } from '../../src/capture/capture.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

const outbox = outboxTable('public', 'outbox')
let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table orders (id serial primary key, note text)`
  await db.sql`create table order_lines (id serial primary key, order_id int)`
  await db.sql`create table plain (id int)`
  await captureTable(db.sql, outbox, { table: 'orders', entity: 'order' })
  await captureTable(db.sql, outbox, { table: 'order_lines', entity: 'order_line', mode: 'row' })
})
afterEach(async () => {
  await db.sql.unsafe('truncate orders, order_lines, plain; truncate outbox') // the outbox last: the first statement writes events
})
afterAll(async () => {
  await db.drop()
})

const events = () => db.sql<{ event_type: string; entity_type: string; entity_id: string; payload: unknown; txid: string }[]>`
  select event_type, entity_type, entity_id, payload, metadata ->> 'txid' as txid from outbox order by id`

describe('capturing TRUNCATE', () => {
  it('TRUNCATE … RESTART IDENTITY writes one <entity>.truncated event naming the table, and the rows written after it are captured as before', async () => {
    await db.sql`insert into orders (note) select 'n' || n from generate_series(1, 3) n`
    await db.sql`truncate orders restart identity`
    await db.sql`insert into orders (note) values ('after')`
    const written = await events()
    expect(written.map((e) => [e.event_type, e.entity_id])).toEqual([
      ['order.created', '1'], ['order.created', '2'], ['order.created', '3'],
      ['order.truncated', ''],
      ['order.created', '1'], // the identity restarted: the id comes again, after the truncation
    ])
    expect(written[3]).toMatchObject({ entity_type: 'order', payload: { schema: 'public', table: 'orders' } })
  })

  it('one TRUNCATE of several captured tables writes one event per captured table, in the truncating transaction', async () => {
    const [{ txid }] = await db.sql.begin(async (tx) => {
      await tx`truncate orders, order_lines, plain`
      return tx`select pg_current_xact_id()::text as txid`
    })
    const written = await events()
    expect(written.map((e) => [e.event_type, (e.payload as { table: string }).table]).sort()).toEqual([['order.truncated', 'orders'], ['order_line.truncated', 'order_lines']])
    expect(written.map((e) => e.txid)).toEqual([txid, txid])
  })

  it('TRUNCATE … CASCADE writes an event for each captured table it empties, the referencing ones too', async () => {
    await db.sql`create table parents (id int primary key)`
    await db.sql`create table children (id int primary key, parent_id int references parents)`
    await captureTable(db.sql, outbox, { table: 'parents', entity: 'parent' })
    await captureTable(db.sql, outbox, { table: 'children', entity: 'child' })
    await db.sql`truncate parents cascade`
    expect((await events()).map((e) => e.event_type).sort()).toEqual(['child.truncated', 'parent.truncated'])
    for (const table of ['children', 'parents']) await uncaptureTable(db.sql, outbox, table)
  })

  it('a TRUNCATE that rolls back writes nothing', async () => {
    await db.sql`insert into orders (note) values ('kept')`
    await db.sql
      .begin(async (tx) => {
        await tx`truncate orders`
        throw new Error('rolled back')
      })
      .catch((error: Error) => expect(error.message).toBe('rolled back'))
    expect((await events()).map((e) => e.event_type)).toEqual(['order.created'])
    expect((await db.sql`select count(*)::int as n from orders`)[0]!.n).toBe(1)
  })

  it('the truncating transaction wakes a sleeping poller, as other captured writes do', async () => {
    const notified: number[] = []
    const listener = await db.sql.listen(outbox.channel, () => void notified.push(1))
    try {
      await db.sql`update outbox_wakeup set asleep = true`
      await db.sql`truncate orders`
      await waitFor('a notification', () => notified.length > 0, 5_000)
    } finally {
      await listener.unlisten()
      await db.sql`update outbox_wakeup set asleep = false`
    }
  })

  it('a partitioned table captures a TRUNCATE of the parent, not of one partition (as documented); a DELETE FROM a partition is captured', async () => {
    await db.sql`create table readings (id int primary key, at int) partition by range (id)`
    await db.sql`create table readings_1 partition of readings for values from (0) to (100)`
    await captureTable(db.sql, outbox, { table: 'readings', entity: 'reading' })
    await db.sql`insert into readings values (1, 1)`
    await db.sql`truncate readings`
    await db.sql`insert into readings values (2, 1), (3, 1)`
    await db.sql`truncate readings_1`
    await db.sql`insert into readings values (4, 1)`
    await db.sql`delete from readings_1`
    expect((await events()).map((e) => `${e.event_type} ${e.entity_id}`)).toEqual([
      'reading.created 1', 'reading.truncated ', 'reading.created 2', 'reading.created 3', 'reading.created 4', 'reading.deleted 4',
    ])
    await uncaptureTable(db.sql, outbox, 'readings')
  })
})

describe('the capture command and TRUNCATE', () => {
  it('--events can leave TRUNCATE out; capturing again with it (twice) attaches one trigger; uncapture removes it', async () => {
    const truncateTriggers = async () =>
      (await db.sql`select count(*)::int as n from pg_trigger where tgrelid = 'order_lines'::regclass and tgfoid = ${outbox.captureTruncateFunction}::regproc`)[0]!.n
    const left = await runCli(['capture', 'order_lines', '--entity', 'order_line', '--events', 'insert,update,delete'], { DATABASE_URL: db.url })
    expect(left.stdout).toMatch(/^capturing order_lines as order_line\.created\|updated\|deleted \(/)
    await db.sql`truncate order_lines`
    expect(await events()).toEqual([])
    expect(await truncateTriggers()).toBe(0)

    for (let i = 0; i < 2; i++) {
      const captured = await runCli(['capture', 'order_lines', '--entity', 'order_line'], { DATABASE_URL: db.url })
      expect(captured.stdout).toMatch(/^capturing order_lines as order_line\.created\|updated\|deleted\|truncated \(/)
    }
    expect(await truncateTriggers()).toBe(1)
    expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'order_lines')!.events).toEqual(['insert', 'update', 'delete', 'truncate'])
    await db.sql`truncate order_lines`
    expect((await events()).map((e) => e.event_type)).toEqual(['order_line.truncated'])

    expect((await runCli(['uncapture', 'order_lines'], { DATABASE_URL: db.url })).stdout).toBe('no longer capturing order_lines\n')
    expect(await truncateTriggers()).toBe(0)
    await db.sql`truncate order_lines`
    expect(await events()).toHaveLength(1)
    await captureTable(db.sql, outbox, { table: 'order_lines', entity: 'order_line', mode: 'row' })
  })

  it('truncate alone is refused: the options live on the row events\' triggers', async () => {
    const refused = await runCli(['capture', 'orders', '--entity', 'order', '--events', 'truncate'], { DATABASE_URL: db.url })
    expect(refused.code).toBe(2)
    expect(refused.stderr).toBe('outbox-poller: events must name at least one of insert, update, delete\n')
    const unknown = await runCli(['capture', 'orders', '--entity', 'order', '--events', 'insert,truncated'], { DATABASE_URL: db.url })
    expect(unknown.stderr).toBe('outbox-poller: events must be among insert, update, delete, truncate (got "truncated")\n')
    expect((await listCaptures(db.sql, outbox)).find((c) => c.table === 'orders')!.events).toEqual(['insert', 'update', 'delete', 'truncate'])
  })

  it('the SQL entry point captures TRUNCATE by default, and leaves it out when its events do', async () => {
    await db.sql`create table sql_captured (id int primary key)`
    await db.sql`select outbox_capture_table('sql_captured', 'thing', 'id')`
    await db.sql`truncate sql_captured`
    await db.sql`select outbox_capture_table('sql_captured', 'thing', 'id', events => '{insert}')`
    await db.sql`truncate sql_captured`
    expect((await events()).map((e) => e.event_type)).toEqual(['thing.truncated'])
    await expect(db.sql`select outbox_capture_table('sql_captured', 'thing', 'id', events => '{truncate}')`).rejects.toThrow(/at least one of insert, update, delete/)
    await uncaptureTable(db.sql, outbox, 'sql_captured')
  })
})
