import { describe, expect, it } from 'vitest'
import { RetryLaterError } from '../../src/errors.js'
import { createPoller } from '../../src/create-poller.js'
import type { OutboxEvent } from '../../src/types.js'
import { pollerSuite } from '../support/poller-suite.js'
import { waitFor } from '../support/wait-for.js'

const { db, startPoller } = pollerSuite({ items: true, defaults: { retryDelay: 10, retryDelayMax: 50 } })

async function insertItems(from: number, to: number) {
  await db.sql`insert into items select n, 'item ' || n from generate_series(${from}::int, ${to}::int) n`
}

async function outboxState() {
  return db.sql<{ entity_id: string; processed: boolean; attempts: number; dead: boolean; last_error: string | null }[]>`
    select entity_id, processed_at is not null as processed, attempts, dead_at is not null as dead, last_error from outbox order by id`
}

describe('poller', () => {
  it('hands every captured change to the handler with the seed event shape and marks it processed', async () => {
    const seen: OutboxEvent[] = []
    const poller = startPoller({ handlers: { 'item.*': (event) => void seen.push(event) } })
    await poller.start()
    await insertItems(1, 600)
    await db.sql`update items set name = 'renamed' where id = 1`
    await waitFor('601 events handled', () => seen.length >= 601)
    const first = seen.find((e) => e.entity_id === '1' && e.event_type === 'item.created')!
    expect(first).toMatchObject({ event_type: 'item.created', entity_type: 'item', entity_id: '1', processed_at: null, attempt: 1, payload: { data: { id: 1, name: 'item 1' } } })
    expect(typeof first.id).toBe('string')
    expect(first.event_id).toMatch(/^[0-9a-f-]{36}$/)
    expect(first.created_at).toBeInstanceOf(Date)
    await waitFor('all rows processed', async () => (await outboxState()).every((row) => row.processed))
    expect(seen).toHaveLength(601)
  })

  it('a failing handler retries only its own event, then dead-letters it; batch-mates are unaffected', async () => {
    const attempts = new Map<string, number>()
    const poller = startPoller({
      maxAttempts: 3,
      handlers: async (event) => {
        attempts.set(event.entity_id, (attempts.get(event.entity_id) ?? 0) + 1)
        if (event.entity_id === '13') throw new TypeError('cannot handle 13')
      },
    })
    await insertItems(1, 40)
    await poller.start()
    await waitFor('event 13 dead', async () => (await outboxState()).find((row) => row.entity_id === '13')?.dead)
    const rows = await outboxState()
    const poison = rows.find((row) => row.entity_id === '13')!
    expect(poison).toMatchObject({ processed: false, attempts: 3, dead: true, last_error: 'TypeError: cannot handle 13' })
    expect(rows.filter((row) => row.entity_id !== '13').every((row) => row.processed && row.attempts === 0)).toBe(true)
    expect(attempts.get('13')).toBe(3)
    expect([...attempts.entries()].filter(([id]) => id !== '13').every(([, n]) => n === 1)).toBe(true)
    // The seed's backlog query still counts the dead event as the failure it is.
    const [{ count }] = await db.sql`SELECT COUNT(*)::int AS count FROM outbox WHERE processed_at IS NULL`
    expect(count).toBe(1)
    expect(poller.stats).toMatchObject({ dead: 1, failed: 3 })
  })

  it('a hanging async handler times out and its signal aborts', async () => {
    let aborted: unknown
    const poller = startPoller({
      handlerTimeout: 100,
      maxAttempts: 1,
      handlers: (_event, ctx) =>
        new Promise<void>((resolve) => {
          ctx.signal.addEventListener('abort', () => (aborted = ctx.signal.reason))
          setTimeout(resolve, 60_000).unref()
        }),
    })
    await insertItems(1, 1)
    await poller.start()
    await waitFor('dead', async () => (await outboxState())[0]?.dead)
    expect((await outboxState())[0]!.last_error).toBe('handler timed out after 100 ms')
    expect(String(aborted)).toMatch(/timed out/)
  })

  it('runs every matching handler; unmatched events are processed by default and held with --unmatched hold', async () => {
    const calls: string[] = []
    const poller = startPoller({ handlers: { 'item.created': () => void calls.push('exact'), 'item.*': () => void calls.push('wildcard'), 'other.*': () => void calls.push('other') } })
    await insertItems(1, 1)
    await poller.start()
    await waitFor('processed', async () => (await outboxState())[0]?.processed)
    expect(calls.sort()).toEqual(['exact', 'wildcard'])
    await poller.stop()
    await db.sql`insert into outbox (event_type, entity_type, entity_id, payload) values ('unknown.thing', 'unknown', '1', '{}')`
    const holding = startPoller({ unmatched: 'hold', intervalMax: 100000, handlers: { 'item.*': () => {} } })
    await holding.start()
    await waitFor('held with a retry time', async () => (await db.sql`select retry_at from outbox where event_type = 'unknown.thing'`)[0]?.retry_at)
    const [held] = await db.sql`select processed_at, attempts from outbox where event_type = 'unknown.thing'`
    expect(held).toEqual({ processed_at: null, attempts: 0 })
    await holding.stop()
    const processing = startPoller({ handlers: { 'item.*': () => {} } })
    await db.sql`update outbox set retry_at = now() where event_type = 'unknown.thing'`
    await processing.start()
    await waitFor('unmatched processed', async () => (await db.sql`select processed_at from outbox where event_type = 'unknown.thing'`)[0]?.processed_at)
  })

  it('handles a batch concurrently, up to --concurrency at a time', async () => {
    let active = 0
    let peak = 0
    const poller = startPoller({
      batchSize: 50,
      concurrency: 8,
      handlers: async () => {
        active++
        peak = Math.max(peak, active)
        await new Promise((resolve) => setTimeout(resolve, 20))
        active--
      },
    })
    await insertItems(1, 50)
    await poller.start()
    await waitFor('all processed', async () => (await outboxState()).every((row) => row.processed))
    expect(peak).toBe(8)
  })

  it('a NOTIFY wakes an idle poller long before its poll interval', async () => {
    let handledAt = 0
    const poller = startPoller({ intervalMin: 60_000, intervalMax: 60_000, handlers: () => void (handledAt = Date.now()) })
    await poller.start()
    await waitFor('flag raised', async () => (await db.sql`select asleep from outbox_wakeup`)[0]?.asleep)
    const writtenAt = Date.now()
    await insertItems(1, 1)
    await waitFor('handled', () => handledAt > 0, 5_000)
    expect(handledAt - writtenAt).toBeLessThan(2_000)
  })

  it('RetryLaterError (a broker down) defers the event with no attempt charged, however long it lasts', async () => {
    let calls = 0
    const poller = startPoller({ maxAttempts: 1, handlers: () => {
      calls++
      if (calls <= 3) throw new RetryLaterError('broker unreachable')
    } })
    await insertItems(1, 1)
    await poller.start()
    await waitFor('processed after the outage', async () => (await outboxState())[0]?.processed, 20_000)
    expect(calls).toBe(4)
    expect((await outboxState())[0]).toMatchObject({ attempts: 0, dead: false, last_error: null })
  })

  it('an error message with a NUL byte is stored (text cannot hold NUL) and the batch settles', async () => {
    const poller = startPoller({ maxAttempts: 1, handlers: () => {
      throw new Error('bad\u0000byte')
    } })
    await insertItems(1, 2)
    await poller.start()
    await waitFor('both dead', async () => (await outboxState()).every((row) => row.dead))
    expect((await outboxState())[0]!.last_error).toBe('bad\\0byte')
  })

  it('stop() after a failed start() returns at once', async () => {
    const poller = createPoller({ connectionString: db.url, table: 'no_such_outbox', handlers: () => {} })
    await expect(poller.start()).rejects.toThrow(/does not exist/)
    await poller.stop()
  })

  it('a poller stopped while asleep lowers the wake-up flag it raised', async () => {
    const poller = startPoller({ handlers: () => {} })
    await poller.start()
    await waitFor('flag raised', async () => (await db.sql`select asleep from outbox_wakeup`)[0]?.asleep)
    await poller.stop()
    expect((await db.sql`select asleep from outbox_wakeup`)[0]!.asleep).toBe(false)
  })

  it('events waiting for a retry do not hold back fresh ones', async () => {
    const poller = startPoller({ retryDelay: 60_000, retryDelayMax: 60_000, handlers: (event) => {
      if (event.entity_id === '1') throw new Error('later')
    } })
    await insertItems(1, 1)
    await poller.start()
    await waitFor('first failed', async () => (await outboxState())[0]?.attempts === 1)
    await insertItems(2, 3)
    await waitFor('fresh ones processed', async () => (await outboxState()).filter((row) => row.processed).length === 2)
  })

  it('reconnects after losing its connection; the batch in hand rolls back and nothing is lost', async () => {
    const handled: string[] = []
    let killed = false
    const poller = startPoller({
      applicationName: 'outbox-poller-test-reconnect',
      handlers: async (event) => {
        if (!killed && event.entity_id === '5') {
          killed = true
          await db.sql`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'outbox-poller-test-reconnect'`
        }
        handled.push(event.entity_id)
      },
    })
    await insertItems(1, 10)
    await poller.start()
    await waitFor('all processed after reconnecting', async () => (await outboxState()).every((row) => row.processed), 20_000)
    expect(killed).toBe(true)
    expect(new Set(handled).size).toBe(10)
    expect((await outboxState()).every((row) => row.attempts === 0)).toBe(true)
  })

  it('stop finishes the batch in hand and commits it; start and stop are idempotent', async () => {
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    let started = 0
    const poller = startPoller({ handlers: async () => {
      started++
      await gate
    } })
    await insertItems(1, 5)
    await Promise.all([poller.start(), poller.start()])
    await waitFor('batch in flight', () => started === 5)
    const stopping = Promise.all([poller.stop(), poller.stop()])
    setTimeout(release, 100)
    await stopping
    expect((await outboxState()).every((row) => row.processed)).toBe(true)
  })

  it('a forced stop aborts the handlers and rolls the batch back without charging an attempt', async () => {
    let running = 0
    let aborted = 0
    const poller = startPoller({
      handlers: (_event, ctx) =>
        new Promise<void>((_resolve, reject) => {
          running++
          ctx.signal.addEventListener('abort', () => (aborted++, reject(ctx.signal.reason)))
        }),
    })
    await insertItems(1, 3)
    await poller.start()
    await waitFor('every handler of the batch running', () => running === 3)
    await poller.stop({ force: true })
    expect(aborted).toBe(3)
    const rows = await outboxState()
    expect(rows.every((row) => !row.processed && row.attempts === 0 && row.last_error === null)).toBe(true)
  })
})
