import { describe, expect, it } from 'vitest'
import { silentLogger } from '../../src/log.js'
import { databaseCrashCharge } from '../../src/supervisor/crash-charge.js'
import { pollerSuite } from '../support/poller-suite.js'
import { waitFor } from '../support/wait-for.js'

const { db, startPoller, unprocessed: pending } = pollerSuite({ items: true })


describe('after a crash', () => {
  it('suspects are claimed alone, every other claim, so fresh events are not held up behind them', async () => {
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 200) n`
    // what the supervisor records after a crash: 30 events charged and marked suspect
    const suspects = new Set((await db.sql`update outbox set suspect = true, attempts = 1, retry_at = now() where entity_id::int <= 30 returning id`).map((row) => row.id as string))
    const batches: string[][] = []
    let current: string[] = []
    const poller = startPoller({
      handlers: (event) => void current.push(event.id),
      afterBatch: (report) => {
        if (report.claimed === 0) return
        batches.push(current)
        current = []
      },
    })
    await poller.start()
    await waitFor('the outbox drained', async () => (await pending()) === 0, 30_000)
    for (const batch of batches) if (batch.some((id) => suspects.has(id))) expect(batch).toHaveLength(1)
    // every fresh event was handled by the third batch, while most suspects still waited
    const lastFresh = batches.findLastIndex((batch) => batch.some((id) => !suspects.has(id)))
    expect(lastFresh).toBeLessThanOrEqual(2)
    expect(batches.flat()).toHaveLength(200)
  })
})

describe('crashes charged', () => {
  it('a second replica that claimed a crashed batch before its charge and died on the same poison charges its batch-mates nothing more', async () => {
    await db.sql`insert into items select n, 'item ' || n from generate_series(1001, 1010) n`
    const ids = (await db.sql<{ id: string }[]>`select id::text as id from outbox where entity_id::int between 1001 and 1010 order by id`).map((row) => row.id)
    const first = databaseCrashCharge({ connectionString: db.url, schema: 'public', table: 'outbox', maxAttempts: 3, log: silentLogger })
    const second = databaseCrashCharge({ connectionString: db.url, schema: 'public', table: 'outbox', maxAttempts: 3, log: silentLogger })
    try {
      // the second replica's batch holds the rows, fresh, while the first replica's supervisor charges its crash
      const held = db.sql.reserve()
      const connection = await held
      await connection`begin`
      await connection`select id from outbox where id = any(${ids}::bigint[]) for update`
      const firstCharge = first.charge(1, [ids], 'worker died (exit code 1) while handling this event')
      await new Promise((resolve) => setTimeout(resolve, 200))
      await connection`rollback` // the second replica's worker died too, on the same poison
      connection.release()
      expect(await firstCharge).toBe(true)
      expect(await second.charge(2, [ids], 'worker died (exit code 1) while handling this event')).toBe(false)
      const rows = await db.sql<{ attempts: number; suspect: boolean }[]>`select attempts, suspect from outbox where id = any(${ids}::bigint[])`
      expect(rows.every((row) => row.attempts === 1 && row.suspect)).toBe(true)
      // a suspect claimed alone that dies is charged again, up to its dead letter
      expect(await second.charge(3, [[ids[3]!]], 'worker died (exit code 1) while handling this event')).toBe(true)
      expect(await first.charge(4, [[ids[3]!], [ids[4]!, ids[5]!]], 'worker died (exit code 1) while handling this event')).toBe(true)
      const [poison] = await db.sql<{ attempts: number; dead: boolean }[]>`select attempts, dead_at is not null as dead from outbox where id = ${ids[3]!}`
      expect(poison).toEqual({ attempts: 3, dead: true })
      expect((await db.sql`select 1 from outbox where id = any(${ids}::bigint[]) and attempts > 1`).length).toBe(1)
    } finally {
      await first.close()
      await second.close()
    }
  })
})

describe('beforeDispatch', () => {
  it('announces each event before it starts, in windows, and reports the finished ones: few suspects at any time', async () => {
    const announced = new Set<string>()
    const finished = new Set<string>()
    let calls = 0
    let unannouncedStarts = 0
    let worstSuspects = 0
    const poller = startPoller({
      batchSize: 100,
      concurrency: 4,
      beforeDispatch: async (ids, done) => {
        calls++
        for (const id of done) finished.add(id)
        // confirmed within microtasks, before any handler's timer: the window never has to grow, so the bound
        // below holds however loaded the machine (the next test covers growth)
        await Promise.resolve()
        for (const id of ids) announced.add(id)
      },
      handlers: async (event) => {
        if (!announced.has(event.id)) unannouncedStarts++
        worstSuspects = Math.max(worstSuspects, announced.size - finished.size)
        await new Promise((resolve) => setTimeout(resolve, 20))
      },
      afterBatch: () => {
        // the supervisor forgets a batch once it ended
        announced.clear()
        finished.clear()
      },
    })
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 100) n`
    await poller.start()
    await waitFor('the outbox drained', async () => (await pending()) === 0, 30_000)
    expect(unannouncedStarts).toBe(0)
    expect(calls).toBeGreaterThan(5)
    // in flight (4), the rest of a window and the next one, and what finished since the last call
    expect(worstSuspects).toBeLessThanOrEqual(3 * 4)
  })

  it('with fast handlers the window grows, so the dispatch rarely waits for an announcement', async () => {
    let calls = 0
    let batches = 0
    const poller = startPoller({
      batchSize: 250,
      concurrency: 8,
      beforeDispatch: async () => {
        calls++
        await new Promise((resolve) => setImmediate(resolve))
      },
      handlers: () => {},
      afterBatch: (report) => void (report.claimed > 0 && batches++),
    })
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 5000) n`
    await poller.start()
    await waitFor('the outbox drained', async () => (await pending()) === 0, 30_000)
    expect(batches).toBe(20)
    // a window of 8 would take 32 calls a batch (640); it doubles up to the batch within a few batches
    expect(calls).toBeLessThan(3 * batches)
  })
})
