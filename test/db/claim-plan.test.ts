import type { Sql } from 'postgres'
import { describe, expect, it } from 'vitest'
import { outboxCreateOrderingIndexes } from '../../src/outbox/ordering-index.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { testPartitionBy } from '../support/database.js'
import { pollerSuite } from '../support/poller-suite.js'
import { waitFor } from '../support/wait-for.js'

const { db, startPoller } = pollerSuite()

const insertEvents = (sql: Sql, count: number) =>
  sql`insert into outbox (event_type, entity_type, entity_id, payload) select 'plan.test', 'plan', g::text, '{}' from generate_series(1, ${count}::int) g`

/** Scans of each of the outbox's indexes so far (a backend's counts are flushed when it exits or idles). */
async function indexScans(): Promise<Record<string, number>> {
  const rows = await db.sql<{ name: string; scans: string }[]>`select indexrelname as name, idx_scan::text as scans from pg_stat_user_indexes where relname = 'outbox'`
  return Object.fromEntries(rows.map((row) => [row.name, Number(row.scans)]))
}

// the plain layout's indexes by name (a partitioned outbox's are each partition's own)
describe.skipIf(testPartitionBy !== undefined)("the claim's plan", () => {
  it.each(['none', 'entity'] as const)('--ordering %s: reads fresh events from the pending index, also when the entity index of pending rows is the smaller', async (ordering) => {
    await outboxCreateOrderingIndexes(db.sql, outboxTable('public', 'outbox'), 'entity')
    await db.sql`delete from outbox_settings where name = 'ordering'` // each case records its own
    // a pending index grown by entries no scan marked, and an entity index freshly rebuilt: the smaller one
    await insertEvents(db.sql, 20_000)
    await db.sql`update outbox set processed_at = now()`
    await db.sql`vacuum outbox`
    await db.sql`reindex index outbox_entity_pending`
    await db.sql`analyze outbox`
    const [sizes] = await db.sql<{ pending: number; entity: number }[]>`select pg_relation_size('outbox_pending')::int as pending, pg_relation_size('outbox_entity_pending')::int as entity`
    expect(sizes!.entity).toBeLessThan(sizes!.pending)
    const before = await indexScans()
    const handled: string[] = []
    let claims = 0
    const poller = startPoller({ ordering, handlers: (event) => void handled.push(event.id), afterBatch: () => void claims++ })
    await poller.start()
    for (let i = 0; i < 20; i++) {
      await insertEvents(db.sql, 1)
      await waitFor('the event handled', () => handled.length === i + 1)
    }
    await poller.stop()
    const scans = await waitFor('the poller backend flushed its statistics', async () => {
      const now = await indexScans()
      const delta = (index: string) => now[index]! - before[index]!
      return delta('outbox_pending') + delta('outbox_entity_pending') >= claims ? { pending: delta('outbox_pending'), entity: delta('outbox_entity_pending') } : undefined
    })
    expect(claims).toBeGreaterThanOrEqual(20)
    // each claim's fresh part is one scan of the pending index
    expect(scans.pending).toBeGreaterThanOrEqual(claims)
    // unordered, nothing else reads the entity index: a scan of it would be a claim reading it instead
    if (ordering === 'none') expect(scans.entity).toBe(0)
  })
})
