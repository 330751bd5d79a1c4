import postgres, { type Sql } from 'postgres'
import { describe, expect, it } from 'vitest'
import { pollerSuite } from '../support/poller-suite.js'
import { waitFor } from '../support/wait-for.js'

const { db, startPoller, pending } = pollerSuite()

const insertEvents = (sql: Sql, count: number) =>
  sql`insert into outbox (event_type, entity_type, entity_id, payload) select 'floor.test', 'floor', g::text, '{}' from generate_series(1, ${count}::int) g`

/** A session holding a REPEATABLE READ snapshot: VACUUM keeps every row that dies after it. */
async function holdSnapshot(url: string): Promise<() => Promise<void>> {
  const session = postgres(url, { max: 1, onnotice: () => {} })
  const reserved = await session.reserve()
  await reserved`begin isolation level repeatable read`
  await reserved`select 1`
  return async () => {
    await reserved`rollback`
    reserved.release()
    await session.end()
  }
}

/** Index entries the pending index has handed out to scans so far (flushed when a backend exits or idles). */
async function pendingIndexReads(): Promise<number> {
  const [row] = await db.sql<{ reads: string }[]>`select idx_tup_read::text as reads from pg_stat_user_indexes where indexrelname = 'outbox_pending'`
  return Number(row!.reads)
}

describe('the claim floor', () => {
  it('under a held snapshot, claims do not walk the dead entries of the pending index again and again', async () => {
    const release = await holdSnapshot(db.url)
    try {
      const dead = 100_000
      await insertEvents(db.sql, dead)
      await db.sql`update outbox set processed_at = now()` // 100,000 dead entries that no VACUUM may remove now
      await db.sql`vacuum outbox`
      const before = await pendingIndexReads()
      let claims = 0
      const handled: string[] = []
      const poller = startPoller({ handlers: (event) => void handled.push(event.id), afterBatch: () => void claims++ })
      await poller.start()
      // a steady trickle for ~6 s: each event is claimed on its own, above the dead entries
      for (let i = 0; i < 60; i++) {
        await insertEvents(db.sql, 1)
        await waitFor('the event handled', () => handled.length === i + 1)
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      await poller.stop()
      const reads = await waitFor('the poller backend flushed its statistics', async () => {
        const now = await pendingIndexReads()
        return now - before >= dead ? now - before : 0 // its first claim swept at least once
      })
      // claiming from id 0 every time would hand out at least `dead` entries a claim
      expect(claims).toBeGreaterThanOrEqual(60)
      expect(reads).toBeLessThan((claims * dead) / 3)
    } finally {
      await release()
    }
  })

  it('an event whose transaction commits after later events were claimed, far below the floor, is handled', async () => {
    const handled: string[] = []
    const poller = startPoller({ handlers: (event) => void handled.push(event.entity_id) })
    await poller.start()
    const writer = postgres(db.url, { max: 1, onnotice: () => {} })
    const late = await writer.reserve()
    try {
      await late`begin`
      await late`insert into outbox (event_type, entity_type, entity_id, payload) values ('floor.test', 'floor', 'late', '{}')`
      // later events, claimed for longer than the floor's lag: the floor passes the late event's id
      const until = Date.now() + 2500
      for (let n = 0; Date.now() < until; n++) {
        await db.sql`insert into outbox (event_type, entity_type, entity_id, payload) values ('floor.test', 'floor', ${String(n)}, '{}')`
        await waitFor('the event handled', () => handled.includes(String(n)))
      }
      await late`commit`
      await waitFor('the late event handled', () => handled.includes('late'), 15_000)
      expect(handled.filter((id) => id === 'late')).toHaveLength(1)
    } finally {
      late.release()
      await writer.end()
    }
  })

  it("events another replica's batch held and rolled back, below the floor, are handled", async () => {
    await insertEvents(db.sql, 10)
    const replica = postgres(db.url, { max: 1, onnotice: () => {} })
    const batch = await replica.reserve()
    const handled: string[] = []
    try {
      await batch`begin`
      const locked = await batch`select id from outbox where processed_at is null order by id for update skip locked`
      expect(locked).toHaveLength(10)
      const poller = startPoller({ handlers: (event) => void handled.push(event.id) })
      await poller.start()
      const until = Date.now() + 2500
      while (Date.now() < until) {
        const [{ id }] = await db.sql<{ id: string }[]>`insert into outbox (event_type, entity_type, entity_id, payload) values ('floor.test', 'floor', 'x', '{}') returning id::text`
        await waitFor('the event handled', () => handled.includes(id))
      }
      await batch`rollback`
      await waitFor('the rolled-back events handled', async () => (await pending()) === 0, 15_000)
      expect(new Set(handled).size).toBe(handled.length)
      for (const { id } of locked) expect(handled).toContain(String(id))
    } finally {
      batch.release()
      await replica.end()
    }
  })
})
