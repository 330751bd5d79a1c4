import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { createPartition, partitionRange, periodStart, withLockRetries } from '../../src/outbox/partition-upkeep.js'
import { runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

const parted = outboxTable('public', 'parted')
let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  await migrate({ sql: db.sql, table: 'parted', partitionBy: 'day' })
  // past the size from which ordering indexes are built concurrently (16 MB), in today's partition
  for (let i = 0; i < 4; i++) {
    await db.sql`insert into parted (event_type, entity_type, entity_id, payload, processed_at)
                 select 'fill.done', 'fill', g::text, jsonb_build_object('pad', repeat('x', 400)), now() from generate_series(1, 25000) g`
  }
})
afterAll(() => db.drop())

/** Each partition of the outbox, with the name of its index attached to the outbox's `index` (null: none). */
const attached = async (index: string) =>
  db.sql<Array<{ partition: string; index: string | null }>>`
    select c.relname as partition,
           (select ic.relname from pg_inherits a join pg_index x on x.indexrelid = a.inhrelid join pg_class ic on ic.oid = x.indexrelid
             where a.inhparent = ${index}::regclass and x.indrelid = c.oid) as index
      from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhparent = 'parted'::regclass order by 1`

const valid = async (index: string) => (await db.sql<Array<{ valid: boolean }>>`select indisvalid as valid from pg_index where indexrelid = ${index}::regclass`)[0]?.valid

describe('ordering indexes on a large partitioned outbox', () => {
  it('migrate --ordering entity builds them partition by partition, concurrently: writers keep writing behind a long write transaction', async () => {
    const [{ bytes }] = await db.sql`select sum(pg_relation_size(relid))::bigint as bytes from pg_partition_tree('parted') where isleaf`
    expect(Number(bytes)).toBeGreaterThan(16 * 1024 * 1024)
    // a write transaction held open for 3 s: a plain CREATE INDEX on the outbox would queue every writer behind it
    const holder = postgres(db.url, { max: 1, onnotice: () => {} })
    const writer = postgres(db.url, { max: 1, onnotice: () => {} })
    const held = await holder.reserve()
    await held`begin`
    await held`insert into parted (event_type, entity_type, entity_id, payload) values ('held.write', 'held', '1', '{}')`
    const release = new Promise<void>((resolve) => setTimeout(() => void held`commit`.then(() => resolve()), 3_000))
    const built = runCli(['migrate', '--table', 'parted', '--ordering', 'entity'], { DATABASE_URL: db.url })
    let slowest = 0
    let writes = 0
    let done = false
    void built.then(() => (done = true))
    try {
      while (!done) {
        const started = Date.now()
        await writer`insert into parted (event_type, entity_type, entity_id, payload) values ('meanwhile', 'w', ${String(writes++)}, '{}')`
        slowest = Math.max(slowest, Date.now() - started)
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      const result = await built
      expect(result.code, result.stderr).toBe(0)
      expect(result.stdout).toContain('"public"."parted_entity_pending" created concurrently, "public"."parted_truncated_pending" created concurrently: ')
    } finally {
      await release
      held.release()
      await holder.end()
      await writer.end()
    }
    expect(writes).toBeGreaterThan(10)
    expect(slowest).toBeLessThan(1_500)
    for (const index of ['parted_entity_pending', 'parted_truncated_pending']) {
      expect(await valid(index)).toBe(true)
      // every partition, the default one too, has its own, named after it
      const suffix = index.slice('parted'.length)
      expect((await attached(index)).map((row) => row.index)).toEqual((await attached(index)).map((row) => row.partition + suffix))
    }
    // the claim of an ordered poller finds heads through them
    const plan = await db.sql<Array<{ 'QUERY PLAN': string }>>`explain select 1 from parted where entity_type = 'w' and entity_id = '1' and processed_at is null order by id limit 1`
    expect(plan.map((row) => row['QUERY PLAN']).join('\n')).toMatch(/parted_p\d+_entity_pending/)
  })

  it('a partition created later by upkeep gets them from the outbox\'s indexes', async () => {
    const [{ now }] = await db.sql<Array<{ now: Date }>>`select now()`
    const later = partitionRange(parted, 'day', new Date(periodStart(now, 'day').getTime() + 9 * 86_400_000))
    await withLockRetries(db.sql, { lockTimeoutMs: 1000, attempts: 3, pauseMs: 100 }, (tx) => createPartition(tx, parted, later))
    for (const index of ['parted_entity_pending', 'parted_truncated_pending', 'parted_pending']) {
      expect((await attached(index)).find((row) => row.partition === later.name)?.index).toEqual(expect.any(String))
      expect(await valid(index)).toBe(true)
    }
  })

  it('an interrupted build is taken up where it stopped: the attached partitions kept, a leftover rebuilt, the rest built', async () => {
    // as a build stopped after the first partition, with a half-built index on the second
    await db.sql`create index parted_group_pending on only parted (hashtextextended(group_key, 0), id) where processed_at is null and group_key is not null`
    const [first, second] = (await attached('parted_group_pending')).map((row) => row.partition)
    await db.sql.unsafe(`create index ${first}_group_pending on ${first} (hashtextextended(group_key, 0), id) where processed_at is null and group_key is not null`)
    await db.sql.unsafe(`alter index parted_group_pending attach partition ${first}_group_pending`)
    const firstOid = (await db.sql`select ${`${first}_group_pending`}::regclass::oid as oid`)[0]!.oid
    await db.sql.unsafe(`create index ${second}_group_pending on ${second} (group_key) where processed_at is null`)
    expect(await valid('parted_group_pending')).toBe(false)
    const result = await runCli(['migrate', '--table', 'parted', '--ordering', 'group'], { DATABASE_URL: db.url })
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toContain('"public"."parted_group_pending" created concurrently: pollers may run with --ordering group')
    expect(await valid('parted_group_pending')).toBe(true)
    const rows = await attached('parted_group_pending')
    expect(rows.map((row) => row.index)).toEqual(rows.map((row) => `${row.partition}_group_pending`))
    expect((await db.sql`select ${`${first}_group_pending`}::regclass::oid as oid`)[0]!.oid).toBe(firstOid)
  })
})
