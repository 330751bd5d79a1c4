import postgres, { type Sql } from 'postgres'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { createPoller } from '../../src/create-poller.js'
import { grantPollerRole } from '../../src/outbox/grant.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { createPartition, outboxPartitionUpkeep, partitionRange, periodStart, wantedPartitions, withLockRetries } from '../../src/outbox/partition-upkeep.js'
import { type ClaimQueries, claimQueries, outboxClaimBatch } from '../../src/poller/claim.js'
import { ClaimPartition } from '../../src/poller/claim-partition.js'
import { outboxSettleBatch, settleQueries } from '../../src/poller/settle.js'
import { captureLogger } from '../support/capture-logger.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

const outbox = outboxTable('public', 'outbox')
const dayMs = 86_400_000
const limits = (batchSize: number) => ({ batchSize, maxBytes: 100_000_000, suspects: true, fromId: '0' })
let db: TestDatabase
let today: Date

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  await migrate({ sql: db.sql, partitionBy: 'day' })
  today = periodStart((await db.sql<Array<{ now: Date }>>`select now()`)[0]!.now, 'day')
  // yesterday's partition, and a day 40 days back that has none (its rows land in the default partition)
  const yesterday = partitionRange(outbox, 'day', new Date(today.getTime() - dayMs))
  await withLockRetries(db.sql, { lockTimeoutMs: 1000, attempts: 3, pauseMs: 100 }, (tx) => createPartition(tx, outbox, yesterday))
})
afterAll(() => db.drop())
beforeEach(() => db.sql`truncate outbox`)

/** `rows` pending events created `daysAgo` days back (at 01:00 UTC of that day, or now for today). */
async function pending(rows: number, daysAgo: number, type = 'spread.event') {
  const at = daysAgo === 0 ? null : new Date(today.getTime() - daysAgo * dayMs + 3_600_000)
  await db.sql`
    insert into outbox (event_type, entity_type, entity_id, payload, created_at)
    select ${type}, 'spread', g::text, '{}', coalesce(${at}::timestamptz, now()) from generate_series(1, ${rows}) g`
}

/** The relations this session holds locks on, and whether each is on the fast path. */
async function locks(session: Sql) {
  return session<Array<{ name: string; fastpath: boolean }>>`
    select distinct relation::regclass::text as name, fastpath from pg_locks where pid = pg_backend_pid() and locktype = 'relation' and relation::regclass::text not like 'pg_%'`
}

/** Runs `work` as a new login role (its URL, and one connection as it), dropped after. */
async function withRole(role: string, work: (url: string, session: Sql) => Promise<void>) {
  await db.sql.unsafe(`create role ${role} login password 'pw'`)
  const url = new URL(db.url)
  url.username = role
  url.password = 'pw' // an embedded server asks for one
  const session = postgres(url.href, { max: 1, onnotice: () => {} })
  try {
    await work(url.href, session)
  } finally {
    await session.end()
    await db.sql.unsafe(`drop owned by ${role}; drop role ${role}`)
  }
}

/** A claim of `batchSize` through the parent on `session` (rolled back), then the lookup it asks for: the partition read next. */
async function partitionAfterFullClaim(session: Sql, batchSize: number) {
  const parent = claimQueries(outbox)
  const partition = new ClaimPartition(outbox, (table) => claimQueries(outbox, undefined, undefined, table))
  partition.enable()
  const reserved = await session.reserve()
  try {
    const batch = await outboxClaimBatch(reserved, parent, limits(batchSize))
    await reserved`rollback`
    partition.claimed(parent, batch, batchSize)
    await partition.locate(reserved)
    return { partition, parent }
  } finally {
    reserved.release()
  }
}

/** A poller on `url` (batches of 50) drains the outbox: its batches, and what it logged at warn or error level. */
async function drainAs(url: string) {
  const log = captureLogger()
  const poller = createPoller({ connectionString: url, batchSize: 50, intervalMin: 5, intervalMax: 50, logger: log, handlers: { 'spread.event': async () => {} } })
  try {
    await poller.start()
    await waitFor('every event processed', async () => (await db.sql`select 1 from outbox where processed_at is null limit 1`).length === 0, 30_000)
  } finally {
    await poller.stop({ timeoutMs: 5000 })
  }
  return { batches: poller.stats.batches, complaints: log.entries.filter((entry) => entry.level === 'error' || entry.level === 'warn') }
}

describe('the claim of one partition (claim-partition.ts)', () => {
  it('after a full claim through the parent, the claims read the partition of its last fresh event, locking only it and its indexes, on the fast path', async () => {
    await pending(300, 0)
    const parent = claimQueries(outbox)
    const partition = new ClaimPartition(outbox, (table) => claimQueries(outbox, undefined, undefined, table))
    partition.enable()
    const session = await db.sql.reserve()
    try {
      const claim = async (queries: ClaimQueries, batchSize: number) => {
        const batch = await outboxClaimBatch(session, queries, limits(batchSize))
        const held = await locks(session)
        await session`update outbox set processed_at = now() where id = any(${batch.events.map((event) => event.id)}::bigint[])`
        await session`commit`
        partition.claimed(queries, batch, batchSize)
        return { batch, held }
      }
      const first = await claim(partition.queries(parent, false), 100)
      expect(first.batch.events).toHaveLength(100)
      // the parent's claim locks every partition, the default and those ahead too, most of it off the fast path
      expect(first.held.map((lock) => lock.name)).toEqual(expect.arrayContaining(['outbox', 'outbox_default', wantedPartitions(outbox, 'day', today).at(-1)!.name]))
      // up to PostgreSQL 17 a backend has 16 fast-path slots, and these are more; 18 sizes them by max_locks_per_transaction
      const [{ version }] = await db.sql<Array<{ version: number }>>`select current_setting('server_version_num')::int as version`
      if (version < 180000) expect(first.held.some((lock) => !lock.fastpath)).toBe(true)
      expect(partition.reading).toBeUndefined()
      await partition.locate(session)
      expect(partition.reading?.table).toBe(partitionRange(outbox, 'day', today).name)
      const second = await claim(partition.queries(parent, false), 100)
      expect(second.batch.events).toHaveLength(100)
      expect(second.batch.events[0]!.schema).toBe('public')
      const read = partitionRange(outbox, 'day', today).name
      expect(second.held.map((lock) => lock.name)).toContain(read)
      // besides it and its indexes: the outbox itself, locked first for the partition DDL's sake, and the catalog of attached partitions
      expect(second.held.filter((lock) => !lock.name.startsWith(`${read}_`) && ![read, 'outbox', 'pg_inherits'].includes(lock.name))).toEqual([])
      expect(second.held.every((lock) => lock.fastpath)).toBe(true)
      // a sweep goes through the parent, and a claim that comes back short sends the next ones there
      expect(partition.queries(parent, true)).toBe(parent)
      const third = await claim(partition.queries(parent, false), 150)
      expect(third.batch.events).toHaveLength(100)
      expect(partition.reading).toBeUndefined()
      expect(partition.queries(parent, false)).toBe(parent)
    } finally {
      await session`rollback`.catch(() => {})
      session.release()
    }
  })

  it('a connection keeps the statements of at most two partitions prepared: moving to another deallocates the earlier', async () => {
    await pending(120, 1)
    await pending(120, 0)
    const parent = claimQueries(outbox)
    const parentSettle = settleQueries(outbox)
    const partition = new ClaimPartition(outbox, (table) => claimQueries(outbox, undefined, undefined, table))
    partition.enable()
    const session = await db.sql.reserve()
    const prepared = async () =>
      (await session<Array<{ statement: string }>>`select statement from pg_prepared_statements where statement like '%statement of one partition%' and statement not like '%pg_prepared_statements%'`).map((row) => row.statement)
    const generations = async () => new Set((await prepared()).map((statement) => /generation (\S+) \*\//.exec(statement)![1])).size
    try {
      const read: string[] = []
      const settledOn: string[] = []
      // yesterday's 120 events in full claims of 40, then today's
      for (let claims = 0; claims < 8; claims++) {
        await partition.locate(session)
        const queries = partition.queries(parent, false)
        const batch = await outboxClaimBatch(session, queries, limits(40))
        // a batch claimed from the partition settles there, one claimed through the parent through it
        const settle = partition.settleQueries(queries, parentSettle)
        expect(settle === parentSettle).toBe(queries === parent)
        settledOn.push(/^update (\S+)/.exec(settle.markProcessed)![1]!)
        await outboxSettleBatch(session, settle, { processed: batch.events, failed: [], held: [], holdMs: 0, deferred: [], deferMs: 0 }, 5)
        partition.claimed(queries, batch, 40)
        if (partition.reading !== undefined && read.at(-1) !== partition.reading.table) read.push(partition.reading.table)
        // the earlier partition's statements go with the next batch's BEGIN
        expect(await generations(), `after claim ${claims + 1}`).toBeLessThanOrEqual(2)
      }
      const yesterday = partitionRange(outbox, 'day', new Date(today.getTime() - dayMs))
      const todays = partitionRange(outbox, 'day', today)
      expect(read).toEqual([yesterday.name, todays.name])
      expect(settledOn).toContain(yesterday.qualified)
      expect(settledOn).toContain(todays.qualified)
      expect(await generations()).toBe(1)
      // today's claim and its settlement
      expect(await prepared()).toHaveLength(2)
      for (const statement of await prepared()) expect(statement).toContain(todays.qualified)
      expect(Number((await session`select count(*) from outbox where processed_at is null`)[0]!.count)).toBe(0)
    } finally {
      await session`rollback`.catch(() => {})
      session.release()
    }
  })

  it('a partition dropped while read: the claim fails (the runner resets on a failed batch) and the next one goes through the parent', async () => {
    await pending(50, 1)
    const parent = claimQueries(outbox)
    const partition = new ClaimPartition(outbox, (table) => claimQueries(outbox, undefined, undefined, table))
    partition.enable()
    const session = await db.sql.reserve()
    const yesterday = partitionRange(outbox, 'day', new Date(today.getTime() - dayMs))
    try {
      const batch = await outboxClaimBatch(session, parent, limits(50))
      await session`commit`
      partition.claimed(parent, batch, 50)
      await partition.locate(session)
      expect(partition.reading?.table).toBe(yesterday.name)
      await db.sql.unsafe(`alter table outbox detach partition ${yesterday.name}`)
      await db.sql.unsafe(`drop table ${yesterday.name}`)
      await expect(outboxClaimBatch(session, partition.queries(parent, false), limits(50))).rejects.toMatchObject({ code: '42P01' })
      await session`rollback`
      partition.reset()
      await pending(3, 0)
      expect((await outboxClaimBatch(session, partition.queries(parent, false), limits(50))).events).toHaveLength(3)
      await session`commit`
    } finally {
      await session`rollback`.catch(() => {})
      session.release()
      await withLockRetries(db.sql, { lockTimeoutMs: 1000, attempts: 3, pauseMs: 100 }, (tx) => createPartition(tx, outbox, yesterday))
    }
  })

  it('a partition detached while read, its events pending: the poller stops claiming them, none handled twice', async () => {
    await pending(1000, 1)
    const yesterday = partitionRange(outbox, 'day', new Date(today.getTime() - dayMs))
    const handled = new Map<string, number>()
    const poller = createPoller({ connectionString: db.url, batchSize: 50, intervalMin: 5, intervalMax: 50, handlers: {
      'spread.event': async (event) => {
        handled.set(event.id, (handled.get(event.id) ?? 0) + 1)
        await new Promise((resolve) => setTimeout(resolve, 1))
      },
    } })
    try {
      await poller.start()
      await waitFor('100 events handled', () => handled.size >= 100)
      // waits for the batch in hand; the claims after it find the partition no longer the outbox's
      await db.sql.unsafe(`alter table outbox detach partition ${yesterday.qualified}`)
      let seen = -1
      await waitFor('the poller idle', () => {
        const now = [...handled.values()].reduce((a, b) => a + b, 0)
        const idle = now === seen
        seen = now
        return idle
      }, 10_000, 500)
    } finally {
      await poller.stop({ timeoutMs: 5000 })
    }
    expect([...handled.values()].filter((times) => times > 1)).toEqual([])
    expect(handled.size).toBeLessThan(1000)
    // what was handled was settled before the detach; the rest stays pending where the detach left it
    const [{ processed }] = await db.sql.unsafe<Array<{ processed: number }>>(`select count(*) filter (where processed_at is not null)::int as processed from ${yesterday.qualified}`)
    expect(processed).toBe(handled.size)
    await db.sql.unsafe(`drop table ${yesterday.qualified}`)
    await withLockRetries(db.sql, { lockTimeoutMs: 1000, attempts: 3, pauseMs: 100 }, (tx) => createPartition(tx, outbox, yesterday))
  })

  it('settled in the partition: a row-level UPDATE trigger on the outbox fires for every event, a statement-level one only for the settlements through the parent (README)', async () => {
    await db.sql.unsafe(`
      create table settled_rows (id bigint not null);
      create table settle_statements (n int not null);
      create function record_settled_row() returns trigger language plpgsql as $$
        begin if old.processed_at is null and new.processed_at is not null then insert into settled_rows values (new.id); end if; return null; end $$;
      create function record_settle_statement() returns trigger language plpgsql as $$ begin insert into settle_statements values (1); return null; end $$;
      create trigger record_settled_row after update on outbox for each row execute function record_settled_row();
      create trigger record_settle_statement after update on outbox for each statement execute function record_settle_statement();`)
    try {
      await pending(900, 0)
      const { batches, complaints } = await drainAs(db.url)
      expect(complaints).toEqual([])
      const [{ rows, distinct }] = await db.sql<Array<{ rows: number; distinct: number }>>`select count(*)::int as rows, count(distinct id)::int as distinct from settled_rows`
      expect({ rows, distinct }).toEqual({ rows: 900, distinct: 900 })
      const [{ statements }] = await db.sql<Array<{ statements: number }>>`select count(*)::int as statements from settle_statements`
      // the first batch goes through the parent; the ones read from the partition settle there
      expect(statements).toBeGreaterThanOrEqual(1)
      expect(statements).toBeLessThan(batches)
    } finally {
      await db.sql.unsafe(`
        drop trigger record_settled_row on outbox; drop trigger record_settle_statement on outbox;
        drop function record_settled_row(); drop function record_settle_statement();
        drop table settled_rows, settle_statements`)
    }
  })

  it('2 pollers drain events spread over yesterday\'s partition, today\'s and the default one, with retries, each event handled once and processed', async () => {
    await pending(700, 1)
    await pending(900, 0)
    await pending(150, 40)
    await pending(40, 1, 'flaky.event')
    const [{ partitions }] = await db.sql<Array<{ partitions: string[] }>>`select array_agg(distinct tableoid::regclass::text order by tableoid::regclass::text) as partitions from outbox`
    expect(partitions).toEqual(['outbox_default', partitionRange(outbox, 'day', new Date(today.getTime() - dayMs)).name, partitionRange(outbox, 'day', today).name].sort())
    const handled = new Map<string, number>()
    const failed = new Set<string>()
    const count = (id: string) => handled.set(id, (handled.get(id) ?? 0) + 1)
    const handlers = {
      'spread.event': async (event: { id: string }) => void count(event.id),
      // each fails once, then retries, which the partition's claims and the parent's both take
      'flaky.event': async (event: { id: string }) => {
        if (!failed.has(event.id)) {
          failed.add(event.id)
          throw new Error('first attempt fails')
        }
        count(event.id)
      },
    }
    const pollers = [0, 1].map(() => createPoller({ connectionString: db.url, batchSize: 50, intervalMin: 5, intervalMax: 50, retryDelay: 20, handlers }))
    try {
      await Promise.all(pollers.map((poller) => poller.start()))
      await waitFor('every event processed', async () => (await db.sql`select 1 from outbox where processed_at is null limit 1`).length === 0, 60_000)
    } finally {
      await Promise.all(pollers.map((poller) => poller.stop({ timeoutMs: 5000 })))
    }
    expect(handled.size).toBe(1790)
    expect([...handled.values()].every((times) => times === 1)).toBe(true)
    expect(failed.size).toBe(40)
    const [{ dead, processed }] = await db.sql<Array<{ dead: number; processed: number }>>`select count(*) filter (where dead_at is not null)::int as dead, count(*) filter (where processed_at is not null)::int as processed from outbox`
    expect({ dead, processed }).toEqual({ dead: 0, processed: 1790 })
  })

  it('a role that may not read and lock a partition itself claims through the parent, without a failed batch', () =>
    withRole(`claim_partition_${process.pid}`, async (url, session) => {
      await grantPollerRole(db.sql, outbox, { role: `claim_partition_${process.pid}` })
      await db.sql.unsafe(`revoke all on ${partitionRange(outbox, 'day', today).qualified} from claim_partition_${process.pid}`)
      await pending(300, 0)
      expect((await partitionAfterFullClaim(session, 50)).partition.reading).toBeUndefined()
      expect((await drainAs(url)).complaints).toEqual([])
    }))

  it('grant gives a poller role its rights on every partition, and a partition created later takes them: its claims read the partition', async () => {
    const role = `claim_granted_${process.pid}`
    const later = partitionRange(outbox, 'day', new Date(today.getTime() + 10 * dayMs))
    try {
      await withRole(role, async (url, session) => {
        const statements = await grantPollerRole(db.sql, outbox, { role })
        expect(statements).toContain(`GRANT SELECT, UPDATE ON ${partitionRange(outbox, 'day', today).qualified} TO "${role}"`)
        expect(statements).toContain(`GRANT SELECT, UPDATE ON "public"."outbox_default" TO "${role}"`)
        // upkeep (run as the owner) creates the missing partitions of its window, a partition created by hand the same way
        await db.sql.unsafe(`drop table ${wantedPartitions(outbox, 'day', today).at(-1)!.qualified}`)
        expect((await outboxPartitionUpkeep(db.sql, outbox, 'day')).created).toHaveLength(1)
        await withLockRetries(db.sql, { lockTimeoutMs: 1000, attempts: 3, pauseMs: 100 }, (tx) => createPartition(tx, outbox, later))
        for (const partition of [wantedPartitions(outbox, 'day', today).at(-1)!, later]) {
          const [rights] = await db.sql<Array<{ select: boolean; update: boolean; delete: boolean }>>`
            select has_table_privilege(${role}, ${partition.qualified}, 'SELECT') as select, has_table_privilege(${role}, ${partition.qualified}, 'UPDATE') as update,
                   has_table_privilege(${role}, ${partition.qualified}, 'DELETE') as delete`
          expect(rights).toEqual({ select: true, update: true, delete: false })
        }
        await pending(300, 0)
        const { partition, parent } = await partitionAfterFullClaim(session, 50)
        expect(partition.reading?.table).toBe(partitionRange(outbox, 'day', today).name)
        const read = await session.begin((tx) => tx.unsafe(partition.queries(parent, false).claim, [50, 100_000_000, true, '0']))
        expect(read).toHaveLength(50)
        // and a poller logged in as the role drains through the partition, its BEGIN's lock of the outbox granted too
        const drained = await drainAs(url)
        expect(drained.complaints).toEqual([])
        expect(drained.batches).toBeGreaterThanOrEqual(6)
      })
    } finally {
      await db.sql.unsafe(`drop table if exists ${later.qualified}`)
    }
  })
})
