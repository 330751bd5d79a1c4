import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { bloatFactor, bloatMinBytes, freshIndexBytes } from '../../src/ops/index-bloat.js'
import { outboxMaintenance, outboxReindexBloated } from '../../src/ops/maintenance.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

const outbox = outboxTable('public', 'outbox')
const cleaner = `outbox_cleaner_${randomBytes(4).toString('hex')}`
let db: TestDatabase
/** The tests' writes, on one connection whose statistics are flushed before a VACUUM the rule then reads (see `flushed`). */
let writer: postgres.Sql

beforeAll(async () => {
  db = await createTestDatabase({ ordering: 'entity' })
  writer = postgres(db.url, { max: 1, onnotice: () => {} })
  await db.sql.unsafe(`create role ${cleaner} login password 'pw'; grant select, delete on outbox to ${cleaner}`)
  // the tests VACUUM as autovacuum would, when they mean to: an autovacuum of its own seconds before cleanup makes
  // the rebuild wait for the next cleanup (index-bloat.ts), which a test would see at random
  // (a plain outbox: a partitioned one takes no storage parameters, its partitions are the test's own)
  const [{ kind }] = await db.sql<{ kind: string }[]>`select relkind as kind from pg_class where oid = 'outbox'::regclass`
  if (kind === 'r') await db.sql`alter table outbox set (autovacuum_enabled = false)`
})
afterAll(async () => {
  await writer.end()
  await db.sql.unsafe(`drop owned by ${cleaner}; drop role ${cleaner}`)
  await db.drop()
})

/**
 * The writer's insert counts, in the table's statistics now: a backend flushes them when idle, up to seconds later,
 * so counts flushed after the test's VACUUM would pass for inserts since it and hide the bloat.
 */
const flushed = async () => {
  await writer`select pg_stat_force_next_flush()`
}

const indexBytes = async (name: string) => Number((await db.sql<{ bytes: string }[]>`select pg_relation_size(${name}::regclass) as bytes`)[0]!.bytes)

/** Events written and processed while a REPEATABLE READ snapshot is held: their dead entries stay until it ends. */
async function bloatUnderSnapshot(events: number, whileHeld: () => Promise<void> = async () => {}, table = 'outbox'): Promise<void> {
  const t = writer(table)
  const session = postgres(db.url, { max: 1, onnotice: () => {} })
  const held = await session.reserve()
  await held`begin isolation level repeatable read`
  await held`select 1`
  try {
    for (let done = 0; done < events; done += 10_000) {
      await writer`insert into ${t} (event_type, entity_type, entity_id, payload) select 'bloat.test', 'bloat', g::text, '{}' from generate_series(1, 10000) g`
      await writer`update ${t} set processed_at = now() where processed_at is null and entity_type = 'bloat'`
    }
    await flushed()
    await whileHeld()
  } finally {
    await held`rollback`
    held.release()
    await session.end()
  }
}

describe('rebuilding bloated pending indexes', () => {
  it('after a held snapshot ended, the pending indexes return to the size they had before it', async () => {
    await writer`insert into outbox (event_type, entity_type, entity_id, payload) select 'bloat.test', 'keep', g::text, '{}' from generate_series(1, 500) g`
    await flushed()
    await db.sql`vacuum outbox`
    const before = await indexBytes('outbox_pending')
    await bloatUnderSnapshot(100_000)
    await db.sql`vacuum outbox` // what autovacuum does once the snapshot ended: the pages are freed, the file stays
    const bloated = await indexBytes('outbox_pending')
    expect(bloated).toBeGreaterThan(4 * before)
    const result = await outboxMaintenance(db.sql, outbox)
    if (result === 'notOwner') throw new Error('the test database owner should own its outbox')
    const { rebuilt, skipped } = result
    expect(skipped).toBeUndefined()
    expect(rebuilt.map((r) => r.index)).toEqual(expect.arrayContaining(['"public"."outbox_pending"', '"public"."outbox_entity_pending"']))
    expect(await indexBytes('outbox_pending')).toBeLessThanOrEqual(2 * before)
    // the rebuilt index is valid and used: the 500 pending events are still found through it
    const [{ pending }] = await db.sql`select count(*)::int as pending from outbox where processed_at is null and dead_at is null and retry_at is null`
    expect(pending).toBe(500)
    expect((await db.sql`select 1 from pg_index where not indisvalid and indrelid = 'outbox'::regclass`).length).toBe(0)
    // nothing left to rebuild
    expect((await outboxReindexBloated(db.sql, outbox)).rebuilt).toEqual([])
  })

  it('while an old snapshot is still held it says so and rebuilds nothing', async () => {
    await bloatUnderSnapshot(50_000)
    await db.sql`vacuum outbox`
    const session = postgres(db.url, { max: 1, onnotice: () => {}, connection: { application_name: 'old-report' } })
    const held = await session.reserve()
    try {
      await held`begin isolation level repeatable read`
      await held`select 1`
      const before = await indexBytes('outbox_pending')
      // any snapshot counts as old with a limit of 0 s
      const { rebuilt, skipped } = await outboxReindexBloated(db.sql, outbox, { snapshotLimitSeconds: 0 })
      expect(rebuilt).toEqual([])
      expect(skipped).toMatch(/^a snapshot \d+ s old \(pid \d+\) is held: a rebuild would wait for it, and stay bloated$/)
      expect(await indexBytes('outbox_pending')).toBe(before)
    } finally {
      await held`rollback`
      held.release()
      await session.end()
    }
  })

  it('a role that may delete but does not own the outbox is told; a rebuild it tries anyway fails and leaves no invalid copy', async () => {
    await bloatUnderSnapshot(50_000)
    await db.sql`vacuum outbox`
    const url = new URL(db.url)
    url.username = cleaner
    url.password = 'pw'
    const restricted = postgres(url.toString(), { max: 1, onnotice: () => {} })
    try {
      expect(await outboxMaintenance(restricted, outbox)).toBe('notOwner')
      await expect(outboxReindexBloated(restricted, outbox)).rejects.toMatchObject({ code: '42501' })
      expect((await db.sql`select 1 from pg_index where not indisvalid and indrelid = 'outbox'::regclass`).length).toBe(0)
    } finally {
      await restricted.end()
    }
  })

  it('on a partitioned outbox, each partition\'s bloated pending index is rebuilt, and stays attached to the outbox\'s', async () => {
    const parted = outboxTable('public', 'parted')
    await migrate({ sql: db.sql, table: 'parted', partitionBy: 'day', ordering: 'entity' })
    // the partition of each index that holds today's events
    const inPartition = async (index: string) =>
      (await db.sql<Array<{ name: string }>>`
        select '"' || replace(n.nspname, '"', '""') || '"."' || replace(c.relname, '"', '""') || '"' as name from pg_inherits i join pg_class c on c.oid = i.inhrelid join pg_namespace n on n.oid = c.relnamespace
          join pg_index x on x.indexrelid = c.oid
         where i.inhparent = ${index}::regclass and x.indrelid = (select tableoid from parted limit 1)`)[0]!.name
    await writer`insert into parted (event_type, entity_type, entity_id, payload) select 'bloat.test', 'keep', g::text, '{}' from generate_series(1, 500) g`
    await flushed()
    await db.sql`vacuum parted`
    const pending = await inPartition('parted_pending')
    const entity = await inPartition('parted_entity_pending')
    const before = await indexBytes(pending)
    await bloatUnderSnapshot(100_000, async () => {}, 'parted')
    await db.sql`vacuum parted`
    expect(await indexBytes(pending)).toBeGreaterThan(4 * before)
    const result = await outboxMaintenance(db.sql, parted)
    if (result === 'notOwner') throw new Error('the test database owner should own its outbox')
    expect(result.skipped).toBeUndefined()
    // that partition's two indexes the bloat went through, no other partition's
    expect(result.rebuilt.map((r) => r.index).sort()).toEqual([entity, pending].sort())
    expect(await indexBytes(pending)).toBeLessThanOrEqual(2 * before)
    expect(await inPartition('parted_pending')).toBe(pending)
    expect((await db.sql`select 1 from pg_index where not indisvalid and indrelid in (select inhrelid from pg_inherits where inhparent = 'parted'::regclass)`).length).toBe(0)
    const [{ count }] = await db.sql`select count(*)::int as count from parted where processed_at is null and dead_at is null and retry_at is null`
    expect(count).toBe(500)
    expect((await outboxReindexBloated(db.sql, parted)).rebuilt).toEqual([])
  })

  it("a busy outbox's pending index, holding what was inserted since the last VACUUM, is not rebuilt: it would be back at that size by the next", async () => {
    await db.sql`vacuum outbox`
    await outboxReindexBloated(db.sql, outbox) // what the tests above left bloated
    await db.sql`vacuum outbox`
    // 100,000 events inserted and processed with no snapshot held, as between two cleanups of a busy outbox
    for (let done = 0; done < 100_000; done += 10_000) {
      await db.sql`insert into outbox (event_type, entity_type, entity_id, payload) select 'busy.test', 'busy', g::text, '{}' from generate_series(1, 10000) g`
      await db.sql`update outbox set processed_at = now() where processed_at is null and entity_type = 'busy'`
    }
    // the statistics the rule reads arrive within a second or so
    for (;;) {
      const [{ inserted }] = await db.sql`select n_ins_since_vacuum::int as inserted from pg_stat_user_tables where relid = 'outbox'::regclass`
      if (inserted >= 100_000) break
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    const busy = await indexBytes('outbox_pending')
    // over the size and the factor the live entries alone (a few hundred) would allow
    expect(busy).toBeGreaterThan(Math.max(bloatMinBytes, bloatFactor * freshIndexBytes(1000, 8)))
    const result = await outboxMaintenance(db.sql, outbox)
    if (result === 'notOwner') throw new Error('the test database owner should own its outbox')
    expect(result.rebuilt.map((r) => r.index)).not.toContain('"public"."outbox_pending"')
    // VACUUM freed its pages for the next interval's inserts; the file stays
    expect(await indexBytes('outbox_pending')).toBe(busy)
  })
  it('with pgstattuple, a pending index grown in a spell when dead entries stayed unmarked is rebuilt once an interval uses few pages again; by its insert churn alone it is not', async () => {
    await db.sql`vacuum outbox`
    await outboxReindexBloated(db.sql, outbox) // what the tests above left bloated
    await db.sql`drop extension if exists pgstattuple`
    await bloatUnderSnapshot(100_000)
    await db.sql`vacuum outbox` // its pages freed, the file stays
    const grown = await indexBytes('outbox_pending')
    expect(grown).toBeGreaterThan(2 * 1024 * 1024)
    /**
     * 60,000 events inserted and processed 100 at a time (less than a leaf page), each time followed by an index-only
     * scan of the pending index (`id + 0`: not the primary key) that marks the dead entries of those processed, as the
     * claims' scans do: the page that receives the inserts deletes them as it fills, and needs no new one.
     */
    const markedInterval = async () => {
      for (let done = 0; done < 60_000; done += 100) {
        await writer`insert into outbox (event_type, entity_type, entity_id, payload) select 'marked.test', 'marked', g::text, '{}' from generate_series(1, 100) g`
        await writer`update outbox set processed_at = now() where processed_at is null and entity_type = 'marked'`
        await writer.begin(async (tx) => {
          await tx`set local enable_seqscan = off`
          await tx`set local enable_bitmapscan = off`
          await tx`select count(*) from outbox where processed_at is null and dead_at is null and retry_at is null and id + 0 >= 0`
        })
      }
      await flushed()
    }
    await markedInterval()
    // by the churn alone: 60,000 inserts since the last VACUUM, twice that is what the file may hold
    const churnOnly = await outboxMaintenance(db.sql, outbox)
    if (churnOnly === 'notOwner') throw new Error('the test database owner should own its outbox')
    expect(churnOnly.rebuilt.map((r) => r.index)).not.toContain('"public"."outbox_pending"')
    // not rebuilt: the file stays (a few pages more where a concurrent snapshot kept some entries unmarked)
    expect(await indexBytes('outbox_pending')).toBeGreaterThanOrEqual(grown)
    await db.sql`create extension pgstattuple`
    try {
      await markedInterval()
      const weighed = await outboxMaintenance(db.sql, outbox)
      if (weighed === 'notOwner') throw new Error('the test database owner should own its outbox')
      expect(weighed.rebuilt.map((r) => r.index)).toContain('"public"."outbox_pending"')
      expect(await indexBytes('outbox_pending')).toBeLessThan(grown / 10)
    } finally {
      await db.sql`drop extension pgstattuple`
    }
  })
})
