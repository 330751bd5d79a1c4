import { describe, expect, it } from 'vitest'
import { emit } from '../../src/capture/emit.js'
import { RetryLaterError } from '../../src/errors.js'
import type { Handler } from '../../src/types.js'
import { pollerSuite } from '../support/poller-suite.js'
import { waitFor } from '../support/wait-for.js'

const { db, startPoller } = pollerSuite({
  truncate: ['effects'],
  defaults: { txMode: 'batch', maxAttempts: 1, concurrency: 8 },
  setup: async (db) => void (await db.sql`create table effects (event_id uuid primary key, entity_id text not null)`),
})

/** Emits one event per id, all claimed by the first batch. */
async function emitJobs(ids: string[]): Promise<void> {
  for (const id of ids) await emit(db.sql, { event_type: 'job.ran', entity_type: 'job', entity_id: id })
}

async function settled(count: number): Promise<void> {
  await waitFor('settled', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is not null or dead_at is not null`)[0]!.n === count)
}

async function outcomes(): Promise<Record<string, string>> {
  const rows = await db.sql<{ entity_id: string; state: string }[]>`
    select entity_id, case when processed_at is not null then 'processed' when dead_at is not null then 'dead' else 'pending' end as state from outbox`
  return Object.fromEntries(rows.map((row) => [row.entity_id, row.state]))
}

async function effects(): Promise<string[]> {
  return (await db.sql<{ entity_id: string }[]>`select entity_id from effects order by entity_id`).map((row) => row.entity_id)
}

/** A handler writing one row per event through ctx.tx(), counting its calls per event. */
function writer(calls: Map<string, number>, then?: (id: string, tx: Awaited<ReturnType<Parameters<Handler>[1]['tx']>>) => Promise<void>): Handler {
  return async (event, ctx) => {
    calls.set(event.entity_id, (calls.get(event.entity_id) ?? 0) + 1)
    const tx = await ctx.tx()
    await tx`insert into effects (event_id, entity_id) values (${event.event_id}, ${event.entity_id})`
    await then?.(event.entity_id, tx)
  }
}

const ids = ['a', 'b', 'c', 'd', 'e', 'f']

describe('--tx-mode batch: one savepoint for the batch, its handlers at once', () => {
  it("commits every handler's writes with processed_at, each handler run once", async () => {
    const calls = new Map<string, number>()
    const poller = startPoller({ handlers: writer(calls) })
    await emitJobs(ids)
    await poller.start()
    await settled(ids.length)
    expect(await outcomes()).toEqual(Object.fromEntries(ids.map((id) => [id, 'processed'])))
    expect(await effects()).toEqual(ids)
    expect([...calls.values()]).toEqual(ids.map(() => 1))
  })

  it("a handler that writes and then throws fails only its event, its write gone; the others run again and commit once", async () => {
    const calls = new Map<string, number>()
    const poller = startPoller({
      handlers: writer(calls, async (id) => {
        if (id === 'c') throw new Error('after the write')
      }),
    })
    await emitJobs(ids)
    await poller.start()
    await settled(ids.length)
    expect(await outcomes()).toEqual({ a: 'processed', b: 'processed', c: 'dead', d: 'processed', e: 'processed', f: 'processed' })
    expect(await effects()).toEqual(['a', 'b', 'd', 'e', 'f'])
    expect((await db.sql`select attempts, last_error from outbox where entity_id = 'c'`)[0]).toEqual({ attempts: 1, last_error: 'after the write' })
    // the batch savepoint rolled back: the other writing events ran a second time, one savepoint each; the failed one did not
    expect(Object.fromEntries(calls)).toEqual({ a: 2, b: 2, c: 1, d: 2, e: 2, f: 2 })
  })

  it('a handler whose statement fails (a unique violation) fails only its event; the others, aborted with it, run again and commit once', async () => {
    const calls = new Map<string, number>()
    const poller = startPoller({
      handlers: writer(calls, async (id, tx) => {
        if (id === 'c') await tx`insert into effects (event_id, entity_id) select event_id, 'dup' from effects where entity_id = 'c'`
      }),
    })
    await emitJobs(ids)
    await poller.start()
    await settled(ids.length)
    expect(await outcomes()).toEqual({ a: 'processed', b: 'processed', c: 'dead', d: 'processed', e: 'processed', f: 'processed' })
    expect(await effects()).toEqual(['a', 'b', 'd', 'e', 'f'])
    expect((await db.sql`select last_error from outbox where entity_id = 'c'`)[0]!.last_error).toMatch(/duplicate key/)
    expect(Object.fromEntries(calls)).toEqual({ a: 2, b: 2, c: 1, d: 2, e: 2, f: 2 })
  })

  it('a statement cancelled by the statement timeout fails only its event; the others do not wait for it, and commit once', async () => {
    const calls = new Map<string, number>()
    const poller = startPoller({
      handlers: writer(calls, async (id, tx) => {
        // undone with the batch savepoint: the events run again after it keep the poller's own timeout
        if (id === 'c') await tx`set local statement_timeout = '50ms'`.then(() => tx`select pg_sleep(30)`)
      }),
    })
    await emitJobs(ids)
    await poller.start()
    await settled(ids.length)
    expect(await outcomes()).toEqual({ a: 'processed', b: 'processed', c: 'dead', d: 'processed', e: 'processed', f: 'processed' })
    expect(await effects()).toEqual(['a', 'b', 'd', 'e', 'f'])
    expect((await db.sql`select last_error from outbox where entity_id = 'c'`)[0]!.last_error).toMatch(/statement timeout/)
    expect(calls.get('c')).toBe(1)
  })

  it('a handler that swallows its own SQL error fails only its event; the batch still settles', async () => {
    const poller = startPoller({
      handlers: writer(new Map(), async (id, tx) => {
        if (id === 'c') await tx`select 1/0`.catch(() => {})
      }),
    })
    await emitJobs(ids)
    await poller.start()
    await settled(ids.length)
    expect(await outcomes()).toEqual({ a: 'processed', b: 'processed', c: 'dead', d: 'processed', e: 'processed', f: 'processed' })
    expect(await effects()).toEqual(['a', 'b', 'd', 'e', 'f'])
  })

  it('a failed attempt is retried as before, and its write commits once with the mark', async () => {
    let attempts = 0
    const poller = startPoller({
      maxAttempts: 3,
      retryDelay: 10,
      retryDelayMax: 20,
      handlers: writer(new Map(), async (id) => {
        if (id === 'c' && ++attempts === 1) throw new Error('first attempt')
      }),
    })
    await emitJobs(ids)
    await poller.start()
    await settled(ids.length)
    expect(await effects()).toEqual(ids)
    expect((await db.sql`select attempts, last_error, processed_at is not null as processed from outbox where entity_id = 'c'`)[0]).toEqual({ attempts: 1, last_error: 'first attempt', processed: true })
  })

  it('a handler that writes and then defers: its write is gone, no attempt charged, the others commit', async () => {
    let deferrals = 0
    const poller = startPoller({
      handlers: writer(new Map(), async (id) => {
        if (id === 'c' && ++deferrals === 1) throw new RetryLaterError('broker down')
      }),
    })
    await emitJobs(ids)
    await poller.start()
    await waitFor('the others committed', async () => (await effects()).length === ids.length - 1)
    expect(await effects()).toEqual(['a', 'b', 'd', 'e', 'f'])
    expect((await db.sql`select attempts, processed_at is null as pending from outbox where entity_id = 'c'`)[0]).toEqual({ attempts: 0, pending: true })
  })

  it('a failing handler that never used ctx.tx() fails only its event, and nobody runs again', async () => {
    const calls = new Map<string, number>()
    const write = writer(calls)
    const poller = startPoller({
      handlers: async (event, ctx) => {
        if (event.entity_id !== 'c') return write(event, ctx)
        calls.set('c', (calls.get('c') ?? 0) + 1)
        throw new Error('no write')
      },
    })
    await emitJobs(ids)
    await poller.start()
    await settled(ids.length)
    expect(await effects()).toEqual(['a', 'b', 'd', 'e', 'f'])
    expect([...calls.values()]).toEqual(ids.map(() => 1))
  })

  it('an event that wrote through the batch savepoint stays a suspect until its batch kept or undid it', async () => {
    const finished: string[] = []
    const poller = startPoller({
      concurrency: 2, // windows of 2: the dispatch announces several times within the batch
      beforeDispatch: (_ids, done) => void finished.push(...done),
      handlers: writer(new Map()),
    })
    await emitJobs(ids)
    await poller.start()
    await settled(ids.length)
    // handlers that wrote may run again if another fails: none is reported finished within its batch
    expect(finished).toEqual([])
  })
})
