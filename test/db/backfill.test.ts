import postgres, { type Sql } from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { backfill } from '../../src/backfill/backfill.js'
import { outboxBackfills } from '../../src/backfill/backfill-progress.js'
import { captureTable } from '../../src/capture/capture.js'
import { ConfigError } from '../../src/errors.js'
import { outboxStatus } from '../../src/ops/monitor.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { createPoller } from '../../src/create-poller.js'
import { type Poller } from '../../src/poller/poller.js'
import type { OutboxEvent } from '../../src/types.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

const outbox = outboxTable('public', 'outbox')
let db: TestDatabase
const pollers: Poller[] = []
const pools: Sql[] = []

beforeAll(async () => {
  db = await createTestDatabase({ ordering: 'entity' })
})
afterEach(async () => {
  for (const poller of pollers.splice(0)) await poller.stop()
  for (const pool of pools.splice(0)) await pool.end({ timeout: 5 })
  await db.sql`drop table if exists accounts, notes, events_by_month cascade`
  await db.sql`truncate outbox, outbox_settings`
})
afterAll(async () => {
  await db.drop()
})

type Row = { id: string; event_type: string; entity_id: string; payload: { data: Record<string, unknown> } }
const events = (type = '%') => db.sql<Row[]>`select id::text, event_type, entity_id, payload from outbox as o where event_type like ${type} order by o.id`

async function accounts(rows: number): Promise<void> {
  await db.sql`create table accounts (id int primary key, email text, password_hash text, plan text)`
  await db.sql`insert into accounts select n, n || '@example.com', 'SECRET', 'free' from generate_series(1, ${rows}) n`
  await captureTable(db.sql, outbox, { table: 'accounts', entity: 'account', excludeColumns: ['password_hash'] })
}

/** Waits until the session of that name waits for a lock. */
async function waitingForLock(applicationName: string): Promise<void> {
  await waitFor(`${applicationName} waits for a lock`, async () =>
    (await db.sql`select 1 from pg_stat_activity where application_name = ${applicationName} and wait_event_type = 'Lock'`).length === 1)
}

describe('backfill', () => {
  it('writes one snapshot per row in key order, in chunks, with excluded columns left out, and records that it finished', async () => {
    await accounts(25)
    const seen: number[] = []
    const result = await backfill(db.sql, 'accounts', { chunkSize: 10, onProgress: (p) => seen.push(p.rows) })
    expect(seen).toEqual([0, 10, 20, 25, 25])
    const written = await events()
    expect(written.map((e) => e.entity_id)).toEqual(Array.from({ length: 25 }, (_, i) => String(i + 1)))
    expect(written.every((e) => e.event_type === 'account.snapshot')).toBe(true)
    expect(written[0]!.payload).toEqual({ data: { id: 1, email: '1@example.com', plan: 'free' } })
    expect(result.progress).toMatchObject({ table: 'accounts', rows: 25, lastKey: '25', where: null })
    expect(result.progress.finishedAt).not.toBeNull()
    expect(await outboxBackfills(db.sql, outbox)).toEqual([])
  })

  it('respects --columns, --where and --event-type, and a dry run only counts', async () => {
    await accounts(30)
    await captureTable(db.sql, outbox, { table: 'accounts', entity: 'account', columns: ['plan'] })
    await db.sql`update accounts set plan = 'pro' where id % 3 = 0`
    await db.sql`truncate outbox`
    const dry = await backfill(db.sql, 'accounts', { where: "plan = 'pro'", dryRun: true })
    expect(dry.wouldWrite).toBe(10)
    expect(await events()).toEqual([])
    await backfill(db.sql, 'accounts', { where: "plan = 'pro'", chunkSize: 4, eventType: 'snapshot.account' })
    const written = await events()
    expect(written.map((e) => Number(e.entity_id))).toEqual([3, 6, 9, 12, 15, 18, 21, 24, 27, 30])
    expect(written.every((e) => e.event_type === 'snapshot.account')).toBe(true)
    expect(written[0]!.payload).toEqual({ data: { id: 3, plan: 'pro' } })
  })

  it('a key that is not unique is never cut in two at a chunk boundary; rows with a NULL key are skipped', async () => {
    await db.sql`create table notes (id serial primary key, account text, body text)`
    await db.sql`insert into notes (account, body) select 'a' || (n / 3), 'note ' || n from generate_series(0, 20) n`
    await db.sql`insert into notes (account, body) values (null, 'orphan')`
    await captureTable(db.sql, outbox, { table: 'notes', entity: 'note', key: 'account' })
    const result = await backfill(db.sql, 'notes', { chunkSize: 2 })
    const written = await events()
    expect(written).toHaveLength(21)
    expect(new Set(written.map((e) => e.payload.data.id)).size).toBe(21)
    expect(result.progress.rows).toBe(21)
  })

  it('an uncaptured table, a bad condition and a bad chunk size are one clear error each', async () => {
    await db.sql`create table notes (id int primary key)`
    await expect(backfill(db.sql, 'notes')).rejects.toThrow(/notes is not captured into "public"."outbox": capture it first/)
    await accounts(3)
    await expect(backfill(db.sql, 'accounts', { where: 'no_such_column > 1' })).rejects.toThrow(ConfigError)
    await expect(backfill(db.sql, 'accounts', { where: 'no_such_column > 1' })).rejects.toThrow(/--where is not a condition on accounts: column "no_such_column" does not exist/)
    await expect(backfill(db.sql, 'accounts', { chunkSize: 0 })).rejects.toThrow(/chunkSize must be an integer between 1 and 100000/)
    await expect(backfill(db.sql, 'accounts', { resume: true })).rejects.toThrow(/no stopped backfill of accounts to resume/)
  })

  it('forced interleaving: an update in flight is waited for and read; an update after the chunk locked its rows waits and comes later', async () => {
    await accounts(3)
    const first = await db.sql.reserve()
    const third = await db.sql.reserve()
    try {
      // an update of row 2 is in flight (its event id taken) when the chunk starts: the chunk locks row 1,
      // then waits for row 2
      await first`begin`
      await first`update accounts set plan = 'pro' where id = 2`
      const running = backfill(postgresNamed('backfill-under-test'), 'accounts', { chunkSize: 10 })
      await waitingForLock('backfill-under-test')
      // an update of row 1, which the waiting chunk holds FOR SHARE, now waits for the chunk
      await third`set application_name = 'late-writer'`
      const late = third`update accounts set plan = 'late' where id = 1`.execute()
      await waitingForLock('late-writer')
      await first`commit`
      await running
      await late
    } finally {
      first.release()
      third.release()
    }
    const written = await events()
    expect(written.map((e) => [e.event_type, e.entity_id, e.payload.data.plan])).toEqual([
      ['account.updated', '2', 'pro'], // in flight first: lower id
      ['account.snapshot', '1', 'free'],
      ['account.snapshot', '2', 'pro'], // read after it committed: the new version
      ['account.snapshot', '3', 'free'],
      ['account.updated', '1', 'late'], // waited for the chunk: after its snapshot
    ])
  })

  it('one backfill of a table at a time: the second says so; status shows the one running, then a stopped one and how to resume it', async () => {
    await accounts(20)
    const blocker = await db.sql.reserve()
    try {
      await blocker`begin`
      await blocker`update accounts set plan = 'pro' where id = 5`
      const controller = new AbortController()
      const running = backfill(postgresNamed('first-backfill'), 'accounts', { chunkSize: 10, onProgress: (p) => { if (p.rows >= 10) controller.abort() }, signal: controller.signal })
      await waitingForLock('first-backfill')
      await expect(backfill(db.sql, 'accounts')).rejects.toThrow(/a backfill of accounts is running already/)
      const status = await outboxStatus(db.sql, outbox)
      expect(status.backfills.map((b) => [b.table, b.running, b.rows])).toEqual([['accounts', true, 0]])
      await blocker`commit`
      const stopped = await running
      expect(stopped.progress).toMatchObject({ rows: 10, lastKey: '10', finishedAt: null })
    } finally {
      blocker.release()
    }
    expect((await outboxBackfills(db.sql, outbox)).map((b) => [b.running, b.lastKey])).toEqual([[false, '10']])
    // the same table and condition resume by themselves; --resume says so explicitly
    const resumed = await backfill(db.sql, 'accounts', { resume: true, chunkSize: 4 })
    expect(resumed.resumed).toBe(true)
    expect(resumed.progress.rows).toBe(20)
    const written = await events('account.snapshot')
    expect(written.map((e) => Number(e.entity_id))).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
  })

  it('a partitioned table is backfilled across its partitions in key order', async () => {
    await db.sql`create table events_by_month (id int, month int, body text, primary key (id, month)) partition by list (month)`
    await db.sql`create table events_by_month_1 partition of events_by_month for values in (1)`
    await db.sql`create table events_by_month_2 partition of events_by_month for values in (2)`
    await db.sql`insert into events_by_month select n, 1 + n % 2, 'b' from generate_series(1, 50) n`
    await captureTable(db.sql, outbox, { table: 'events_by_month', entity: 'monthly', key: 'id' })
    await backfill(db.sql, 'events_by_month', { chunkSize: 7 })
    expect((await events()).map((e) => Number(e.entity_id))).toEqual(Array.from({ length: 50 }, (_, i) => i + 1))
  })

  it('end to end under --ordering entity: a consumer applying events in order ends with the table, while writers update and delete during the backfill', async () => {
    await accounts(2000)
    const copy = new Map<string, Record<string, unknown>>()
    const handle = (event: OutboxEvent) => {
      const data = (event.payload as { data: Record<string, unknown> }).data
      if (event.event_type === 'account.deleted') copy.delete(event.entity_id)
      else copy.set(event.entity_id, data)
    }
    for (let i = 0; i < 2; i++) {
      const poller = createPoller({ connectionString: db.url, ordering: 'entity', batchSize: 100, concurrency: 4, intervalMin: 10, intervalMax: 50, handlers: handle })
      pollers.push(poller)
      await poller.start()
    }
    let writing = true
    const writer = async (seed: number) => {
      let n = seed
      while (writing) {
        n = (n * 1103515245 + 12345) % 2147483648
        const id = 1 + (n % 2000)
        if (n % 5 === 0) await db.sql`delete from accounts where id = ${id}`
        else await db.sql`update accounts set plan = ${`p${n % 97}`}, email = ${`${n}@example.com`} where id = ${id}`
      }
    }
    const writers = [writer(1), writer(2), writer(3)]
    await backfill(db.sql, 'accounts', { chunkSize: 50 })
    writing = false
    await Promise.all(writers)
    await waitFor('outbox drained', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is null`)[0]!.n === 0, 30_000)
    const table = await db.sql<{ id: string; data: Record<string, unknown> }[]>`select id::text, to_jsonb(a) - 'password_hash' as data from accounts a order by id`
    expect(table.length).toBeLessThan(2000) // the writers did delete rows
    expect(new Map(table.map((row) => [row.id, row.data]))).toEqual(copy)
    expect((await events('account.snapshot')).length).toBeGreaterThan(1000) // most rows reached the copy only by their snapshot
  })
})

/** A pool of its own, named in pg_stat_activity, so a test can see its session wait. */
function postgresNamed(applicationName: string): Sql {
  const pool = postgres(db.url, { max: 2, onnotice: () => {}, connection: { application_name: applicationName } })
  pools.push(pool)
  return pool
}
