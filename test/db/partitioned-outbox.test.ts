import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { captureTable } from '../../src/capture/capture.js'
import { ConfigError } from '../../src/errors.js'
import { grantPollerRole } from '../../src/outbox/grant.js'
import { settleQueries } from '../../src/poller/settle.js'
import { claimQueries } from '../../src/poller/claim.js'
import { parkSql } from '../../src/poller/paused-types.js'
import { outboxDropDonePartitions } from '../../src/ops/partition-retention.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { outboxPartitionBy } from '../../src/outbox/partition-layout.js'
import { createPoller } from '../../src/create-poller.js'
import { createPartition, outboxPartitionUpkeep, partitionRange, partitionsAhead, periodStart, wantedPartitions, withLockRetries } from '../../src/outbox/partition-upkeep.js'
import { runCli } from '../support/cli.js'
import { waitFor } from '../support/wait-for.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

const outbox = outboxTable('public', 'outbox')
const dayMs = 86_400_000
let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  await migrate({ sql: db.sql, partitionBy: 'day' })
  await db.sql`create table items (id int primary key, name text)`
  await captureTable(db.sql, outbox, { table: 'items', entity: 'item' })
})
afterAll(() => db.drop())

const partitions = async () =>
  (await db.sql<Array<{ name: string; bound: string }>>`
    select c.relname as name, pg_get_expr(c.relpartbound, c.oid) as bound from pg_inherits i join pg_class c on c.oid = i.inhrelid
     where i.inhparent = 'outbox'::regclass order by 1`).map((row) => row.name)

const now = async () => (await db.sql<Array<{ now: Date }>>`select now()`)[0]!.now

/** A past day's partition holding `rows` events processed (or dead) that long ago. */
async function pastPartition(daysAgo: number, rows: number, state: 'processed' | 'dead' | 'pending' = 'processed') {
  const range = partitionRange(outbox, 'day', new Date(periodStart(await now(), 'day').getTime() - daysAgo * dayMs))
  await withLockRetries(db.sql, { lockTimeoutMs: 1000, attempts: 3, pauseMs: 100 }, (tx) => createPartition(tx, outbox, range))
  const at = new Date(range.from.getTime() + 3_600_000)
  await db.sql`
    insert into outbox (event_type, entity_type, entity_id, payload, created_at, processed_at, dead_at)
    select 'old.event', 'old', g::text, '{}', ${at}, ${state === 'processed' ? at : null}, ${state === 'dead' ? at : null} from generate_series(1, ${rows}) g`
  return range
}

describe('a partitioned outbox', () => {
  it('created at an earlier migration, then upgraded: the later migrations run on the partitioned table, capture and the claim work', async () => {
    const staged = outboxTable('public', 'staged')
    await expect(migrate({ sql: db.sql, table: 'staged', target: '0002_suspects', partitionBy: 'day' })).rejects.toThrow(/created at 0003_ordering_and_emit or later/)
    expect((await migrate({ sql: db.sql, table: 'staged', target: '0003_ordering_and_emit', partitionBy: 'day' })).applied).toEqual(['0001_outbox', '0002_suspects', '0003_ordering_and_emit'])
    expect(await outboxPartitionBy(db.sql, staged)).toBe('day')
    const upgraded = await migrate({ sql: db.sql, table: 'staged' })
    expect(upgraded.applied[0]).toBe('0004_capture_follows_columns')
    expect(upgraded.partitions?.by).toBe('day')
    await db.sql`create table staged_items (id int primary key, name text)`
    await captureTable(db.sql, staged, { table: 'staged_items', entity: 'staged_item' })
    await db.sql`insert into staged_items values (1, 'a')`
    const [row] = await db.sql<Array<{ partition: string; type: string }>>`select tableoid::regclass::text as partition, event_type as type from staged`
    expect(row).toEqual({ partition: wantedPartitions(staged, 'day', await now())[0]!.name, type: 'staged_item.created' })
    const claimed = await db.sql.begin((tx) => tx.unsafe(claimQueries(staged).claim, [10, 1_000_000, false, '0']))
    expect(claimed.map((c) => c.event_type)).toEqual(['staged_item.created'])
  })


  it('is created range-partitioned on created_at, with the layout recorded, a default partition and the partitions ahead', async () => {
    expect(await outboxPartitionBy(db.sql, outbox)).toBe('day')
    const [layout] = await db.sql<Array<{ kind: string; key: string; pk: string }>>`
      select c.relkind as kind, pg_get_partkeydef(c.oid) as key,
             (select pg_get_constraintdef(oid) from pg_constraint where conrelid = c.oid and contype = 'p') as pk
        from pg_class c where c.oid = 'outbox'::regclass`
    expect(layout).toEqual({ kind: 'p', key: 'RANGE (created_at)', pk: 'PRIMARY KEY (id, created_at)' })
    const names = await partitions()
    expect(names).toContain('outbox_default')
    for (const range of wantedPartitions(outbox, 'day', await now())) expect(names).toContain(range.name)
    expect(names).toHaveLength(partitionsAhead.day + 2)
    // the table's indexes and storage parameters came along
    const indexes = (await db.sql<Array<{ name: string }>>`select c.relname as name from pg_index i join pg_class c on c.oid = i.indexrelid where i.indrelid = 'outbox'::regclass order by 1`).map((row) => row.name)
    expect(indexes).toEqual(['outbox_dead', 'outbox_pending', 'outbox_pkey', 'outbox_processed', 'outbox_retry', 'outbox_suspect'])
    const [storage] = await db.sql<Array<{ options: string[] }>>`select reloptions as options from pg_class where oid = ${wantedPartitions(outbox, 'day', await now())[2]!.qualified}::regclass`
    expect(storage!.options).toContain('fillfactor=90')
  })

  it('takes captured writes, ids from the identity sequence', async () => {
    await db.sql`insert into items values (1, 'a'), (2, 'b')`
    const rows = await db.sql<Array<{ id: string; partition: string }>>`select id::text, tableoid::regclass::text as partition from outbox order by id`
    expect(rows).toHaveLength(2)
    expect(Number(rows[1]!.id)).toBe(Number(rows[0]!.id) + 1)
    expect(rows[0]!.partition).toBe(wantedPartitions(outbox, 'day', await now())[0]!.name)
    await db.sql`delete from outbox`
  })

  it('migrate again is a no-op; --partition-by on an existing plain outbox, or another width, is refused in one line', async () => {
    expect((await migrate({ sql: db.sql, partitionBy: 'day' })).applied).toEqual([])
    await expect(migrate({ sql: db.sql, partitionBy: 'hour' })).rejects.toThrow(/is partitioned by day, not hour/)
    const plain = outboxTable('public', 'plain_outbox')
    await migrate({ sql: db.sql, table: 'plain_outbox' })
    const refused = await migrate({ sql: db.sql, table: 'plain_outbox', partitionBy: 'day' }).catch((error: unknown) => error)
    expect(refused).toBeInstanceOf(ConfigError)
    expect((refused as Error).message).toMatch(/exists as a plain table: .*Partitioned outbox: moving a plain outbox/)
    expect((refused as Error).message).not.toContain('\n')
    expect(await outboxPartitionBy(db.sql, plain)).toBeUndefined()
  })

  it('the width survives the deletion of its setting: read from the partitions\' span', async () => {
    const hourly = outboxTable('public', 'hourly')
    await migrate({ sql: db.sql, table: 'hourly', partitionBy: 'hour' })
    await db.sql`delete from hourly_settings`
    expect(await outboxPartitionBy(db.sql, hourly)).toBe('hour')
    await expect(migrate({ sql: db.sql, table: 'hourly', partitionBy: 'day' })).rejects.toThrow(/is partitioned by hour, not day/)
    await db.sql`delete from outbox_settings where name = 'partition_by'`
    expect(await outboxPartitionBy(db.sql, outbox)).toBe('day')
    await db.sql`insert into outbox_settings (name, value) values ('partition_by', 'day')`
  })

  it('upkeep creates a missing partition ahead; one whose range the default partition holds rows of is skipped, said why', async () => {
    const ahead = wantedPartitions(outbox, 'day', await now())
    await db.sql.unsafe(`drop table ${ahead[1]!.qualified}; drop table ${ahead[2]!.qualified}`)
    // a row of ahead[2]'s range arrives while it is missing: the default partition takes it, no write fails
    await db.sql`insert into outbox (event_type, entity_type, entity_id, payload, created_at) values ('x.y', 'x', '1', '{}', ${new Date(ahead[2]!.from.getTime() + 1000)})`
    const result = await outboxPartitionUpkeep(db.sql, outbox, 'day')
    expect(result.created).toEqual([ahead[1]!.name])
    expect(result.skipped).toEqual([{ name: ahead[2]!.name, reason: expect.stringMatching(/default partition holds rows of its range/) }])
    await db.sql`delete from outbox`
    expect((await outboxPartitionUpkeep(db.sql, outbox, 'day')).created).toEqual([ahead[2]!.name])
  })

  it('drops a partition only when nothing in it is kept: pending or recently processed events keep it, dead ones unless past --dead-older-than', async () => {
    const done = await pastPartition(10, 500)
    const pending = await pastPartition(11, 10, 'pending')
    const dead = await pastPartition(12, 10, 'dead')
    const recent = await pastPartition(3, 10)
    const processedBefore = new Date((await now()).getTime() - 7 * dayMs)
    const first = await outboxDropDonePartitions(db.sql, outbox, { processedBefore, deadBefore: undefined })
    expect(first.dropped.map((d) => d.name)).toEqual([done.name])
    expect(first.busy).toEqual([])
    const names = await partitions()
    for (const kept of [pending, dead, recent]) expect(names).toContain(kept.name)
    const second = await outboxDropDonePartitions(db.sql, outbox, { processedBefore, deadBefore: new Date((await now()).getTime() - 5 * dayMs) })
    expect(second.dropped.map((d) => d.name)).toEqual([dead.name])
    expect(await partitions()).toContain(pending.name)
    for (const range of [pending, recent]) await db.sql.unsafe(`drop table ${range.qualified}`)
  })

  it('the settle, over-budget relock and park statements prune to the batch\'s partitions, also as the generic plan of a prepared statement', async () => {
    const queries = settleQueries(outbox)
    const session = await db.sql.reserve()
    try {
      await session`begin`
      await session`set local plan_cache_mode = force_generic_plan`
      const bounds = "now() - interval '1 minute', now() + interval '1 minute'"
      const plans = [
        [queries.markProcessed, `'{1,2}'::bigint[], ${bounds}`],
        [queries.hold, `'{1,2}'::bigint[], ${bounds}, 1000`],
        [queries.markFailed, `'{1}'::bigint[], '{e}'::text[], '{5}'::float8[], 3, ${bounds}`],
        [claimQueries(outbox).relock, `'{1,2}'::bigint[], '{0,0}'::int[], ${bounds}`],
        [parkSql(outbox), `'{1,2}'::bigint[], ${bounds}`],
      ]
      for (const [i, [query, args]] of plans.entries()) {
        await session.unsafe(`prepare settle_${i} as ${query!}`)
        const plan = (await session.unsafe<Array<{ 'QUERY PLAN': string }>>(`explain (analyze, costs off, timing off, summary off) execute settle_${i}(${args!})`)).map((row) => row['QUERY PLAN']).join('\n')
        // every partition but the current day's is removed before it runs
        expect(plan).toContain(`Subplans Removed: ${partitionsAhead.day + 1}`)
      }
    } finally {
      await session`rollback`
      session.release()
    }
  })

  it('events written in the last microsecond of a day and the first of the next, in one batch: claimed, retried and settled in their partitions', async () => {
    const midnight = new Date(periodStart(await now(), 'day').getTime() + dayMs)
    await db.sql`
      insert into outbox (event_type, entity_type, entity_id, payload, created_at)
      values ('edge.event', 'edge', 'last', '{}', ${midnight}::timestamptz - interval '1 microsecond'), ('edge.event', 'edge', 'first', '{}', ${midnight})`
    const where = await db.sql<Array<{ entity_id: string; partition: string }>>`select entity_id, tableoid::regclass::text as partition from outbox where entity_type = 'edge' order by id`
    expect(where.map((row) => row.partition)).toEqual([partitionRange(outbox, 'day', new Date(midnight.getTime() - dayMs)).name, partitionRange(outbox, 'day', midnight).name])
    const attempts = new Map<string, number>()
    const poller = createPoller({ connectionString: db.url, intervalMin: 10, intervalMax: 50, retryDelay: 10, handlers: {
      'edge.event': async (event) => {
        attempts.set(event.entity_id, (attempts.get(event.entity_id) ?? 0) + 1)
        if (attempts.get(event.entity_id) === 1) throw new Error('first attempt fails') // the failure is settled too
      },
    } })
    try {
      await poller.start()
      await waitFor('both events processed', async () => (await db.sql`select 1 from outbox where entity_type = 'edge' and processed_at is not null`).length === 2, 20_000)
    } finally {
      await poller.stop({ timeoutMs: 5000 })
    }
    expect(Object.fromEntries(attempts)).toEqual({ last: 2, first: 2 })
    // the failure was recorded on each (one failed attempt), in its own partition
    expect(await db.sql`select entity_id, attempts from outbox where entity_type = 'edge' order by id`).toEqual([{ entity_id: 'last', attempts: 1 }, { entity_id: 'first', attempts: 1 }])
    await db.sql`delete from outbox where entity_type = 'edge'`
  })

  it('a poller role granted by grant claims and settles through the outbox, and can neither create nor drop a partition', async () => {
    const role = `outbox_poller_${process.pid}`
    await db.sql.unsafe(`create role ${role} login password 'pw'`)
    try {
      await grantPollerRole(db.sql, outbox, { role, cleanup: true })
      await db.sql`insert into items values (50, 'granted')`
      const asRole = new URL(db.url)
      asRole.username = role
      asRole.password = 'pw' // an embedded server asks for one
      const poller = postgres(asRole.href, { max: 1, onnotice: () => {} })
      try {
        const settled = await poller.begin(async (tx) => {
          const claimed = await tx<Array<{ id: string }>>`select id::text from outbox where processed_at is null order by id limit 10 for update skip locked`
          return tx`update outbox set processed_at = now() where id = any(${claimed.map((row) => row.id)}::bigint[])`
        })
        expect(settled.count).toBe(1)
        await expect(poller.unsafe(`create table outbox_p20000101 partition of outbox for values from ('2000-01-01') to ('2000-01-02')`)).rejects.toThrow(/must be owner|permission denied/)
        await expect(poller.unsafe(`drop table ${wantedPartitions(outbox, 'day', await now())[2]!.qualified}`)).rejects.toThrow(/must be owner|permission denied/)
        await expect(poller`delete from outbox where entity_id = '50'`).resolves.toHaveProperty('count', 1)
      } finally {
        await poller.end()
      }
    } finally {
      await db.sql.unsafe(`drop owned by ${role}; drop role ${role}`)
    }
  })

  it('captured writers keep writing while partitions are created and dropped behind a long batch', async () => {
    const ahead = wantedPartitions(outbox, 'day', await now())
    await db.sql.unsafe(`drop table ${ahead[2]!.qualified}`)
    const old = await pastPartition(20, 100)
    const writer = postgres(db.url, { max: 4, onnotice: () => {} })
    const batch = postgres(db.url, { max: 1, onnotice: () => {} })
    const latencies: number[] = []
    const errors: unknown[] = []
    let writing = true
    let nextId = 1000
    const writers = Array.from({ length: 4 }, async () => {
      while (writing) {
        const started = performance.now()
        await writer`insert into items values (${nextId++}, 'w')`.catch((error: unknown) => errors.push(error))
        latencies.push(performance.now() - started)
      }
    })
    try {
      // a batch holding its claim's locks for 3 s: every partition's, and the outbox's
      const held = await batch.reserve()
      await held`begin`
      await held`select id from outbox where processed_at is null order by id limit 1 for update skip locked`
      const heldAt = performance.now()
      const retry = { lockTimeoutMs: 200, attempts: 40, pauseMs: 100 }
      const upkeep = outboxPartitionUpkeep(db.sql, outbox, 'day', retry)
      const drops = outboxDropDonePartitions(db.sql, outbox, { processedBefore: new Date((await now()).getTime() - 7 * dayMs), deadBefore: undefined }, retry)
      await new Promise((resolve) => setTimeout(resolve, 3000))
      const writtenWhileHeld = latencies.length
      await held`commit`
      held.release()
      const releasedAt = performance.now()
      const [created, dropped] = await Promise.all([upkeep, drops])
      writing = false
      await Promise.all(writers)
      expect(errors).toEqual([])
      expect(writtenWhileHeld).toBeGreaterThan(20)
      // each DDL try waits at most its lock_timeout: no write waited for the batch (3 s)
      expect(Math.max(...latencies)).toBeLessThan(1500)
      expect(created.created).toEqual([ahead[2]!.name])
      expect(dropped.dropped.map((d) => d.name)).toEqual([old.name])
      expect(releasedAt - heldAt).toBeGreaterThanOrEqual(3000)
      const [captured] = await db.sql<Array<{ n: number }>>`select count(*)::int as n from outbox where entity_type = 'item' and entity_id::int >= 1000`
      expect(captured!.n).toBe(nextId - 1000)
    } finally {
      writing = false
      await Promise.all(writers)
      await writer.end()
      await batch.end()
    }
  })

  it('the CLI: migrate --partition-by on a plain outbox exits 2 with one line; cleanup as the owner drops a done partition and says so after its deletes line', async () => {
    const refused = await runCli(['migrate', '--table', 'plain_outbox', '--partition-by', 'day'], { DATABASE_URL: db.url })
    expect(refused.code).toBe(2)
    expect(refused.stderr.trim().split('\n')).toHaveLength(1)
    expect(refused.stderr).toMatch(/exists as a plain table/)
    const bad = await runCli(['migrate', '--partition-by', 'week'], { DATABASE_URL: db.url })
    expect(bad.code).toBe(2)
    expect(bad.stderr.trim()).toBe('outbox-poller: --partition-by must be day or hour (got "week")')
    const old = await pastPartition(30, 50)
    await db.sql.unsafe(`analyze ${old.qualified}`)
    const cleanup = await runCli(['cleanup', '--older-than', '7d', '--no-maintenance'], { DATABASE_URL: db.url })
    expect(cleanup.code, cleanup.stderr).toBe(0)
    const lines = cleanup.stdout.trim().split('\n')
    expect(lines[0]).toMatch(/^deleted \d+ processed events? older than 7d from "public"."outbox"$/)
    expect(lines.slice(1)).toEqual([expect.stringMatching(new RegExp(`^dropped partition ${old.name} of "public"\\."outbox" \\(about 50 events, [0-9.]+ MB\\)$`))])
    expect(await partitions()).not.toContain(old.name)
  })
})
