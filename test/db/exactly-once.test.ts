import { Kysely } from 'kysely'
import { PostgresJSDialect } from 'kysely-postgres-js'
import { describe, expect, it } from 'vitest'
import { emit, withEventContext } from '../../src/capture/emit.js'
import type { OutboxEvent } from '../../src/types.js'
import { fixturePath, startReplica } from '../support/cli.js'
import { pollerSuite } from '../support/poller-suite.js'
import { waitFor } from '../support/wait-for.js'

const { db, startPoller } = pollerSuite({
  truncate: ['effects', 'outbox_settings'],
  defaults: { retryDelay: 10, retryDelayMax: 20 },
  setup: async (db) => void (await db.sql`create table effects (event_id uuid primary key)`),
})

describe('ctx.tx: effects in the batch transaction', () => {
  it('a handler that writes and then throws leaves no write behind; the retry that succeeds commits it with the mark', async () => {
    let attempts = 0
    const poller = startPoller({
      concurrency: 4,
      handlers: async (event, ctx) => {
        const tx = await ctx.tx()
        await tx`insert into effects (event_id) values (${event.event_id})`
        if (event.entity_id === 'flaky' && ++attempts === 1) throw new Error('after the write')
      },
    })
    await emit(db.sql, { event_type: 'job.ran', entity_type: 'job', entity_id: 'flaky' })
    for (let i = 0; i < 20; i++) await emit(db.sql, { event_type: 'job.ran', entity_type: 'job', entity_id: String(i) })
    await poller.start()
    await waitFor('all processed', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is null`)[0]!.n === 0)
    const [{ n }] = await db.sql`select count(*)::int as n from effects`
    expect(n).toBe(21) // one write per event: the failed attempt's write rolled back
    const [flaky] = await db.sql`select attempts, last_error from outbox where entity_id = 'flaky'`
    expect(flaky).toEqual({ attempts: 1, last_error: 'after the write' })
  })

  it('a handler that swallows its own SQL error inside ctx.tx fails only its event; the batch still settles', async () => {
    const poller = startPoller({
      maxAttempts: 1,
      handlers: async (event, ctx) => {
        const tx = await ctx.tx()
        await tx`insert into effects (event_id) values (${event.event_id})`
        // an idempotency check gone wrong: the error is caught, but the transaction is aborted
        if (event.entity_id === 'swallow') await tx`select 1/0`.catch(() => {})
      },
    })
    await emit(db.sql, { event_type: 'job.ran', entity_type: 'job', entity_id: 'swallow' })
    for (let i = 0; i < 5; i++) await emit(db.sql, { event_type: 'job.ran', entity_type: 'job', entity_id: String(i) })
    await poller.start()
    await waitFor('settled', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is not null or dead_at is not null`)[0]!.n === 6)
    expect((await db.sql`select count(*)::int as n from outbox where processed_at is not null`)[0]!.n).toBe(5)
    expect((await db.sql`select count(*)::int as n from effects`)[0]!.n).toBe(5)
    expect((await db.sql`select last_error from outbox where entity_id = 'swallow'`)[0]!.last_error).toMatch(/aborted|division/)
  })

  it('the event whose savepoint follows an aborting handler is deferred, not charged; its own writes and the later events commit', async () => {
    const seen: string[] = []
    const poller = startPoller({
      maxAttempts: 1,
      concurrency: 1, // one turn after another, in id order
      handlers: async (event, ctx) => {
        seen.push(event.entity_id)
        const tx = await ctx.tx()
        await tx`insert into effects (event_id) values (${event.event_id})`
        if (event.entity_id === 'swallow') await tx`select 1/0`.catch(() => {})
      },
    })
    for (const id of ['before', 'swallow', 'next', 'later']) await emit(db.sql, { event_type: 'job.ran', entity_type: 'job', entity_id: id })
    await poller.start()
    await waitFor('settled', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is not null or dead_at is not null`)[0]!.n === 4)
    const rows = await db.sql<{ entity_id: string; processed: boolean; dead: boolean; attempts: number }[]>`
      select entity_id, processed_at is not null as processed, dead_at is not null as dead, attempts from outbox order by id`
    expect(rows).toEqual([
      { entity_id: 'before', processed: true, dead: false, attempts: 0 },
      { entity_id: 'swallow', processed: false, dead: true, attempts: 1 },
      { entity_id: 'next', processed: true, dead: false, attempts: 0 },
      { entity_id: 'later', processed: true, dead: false, attempts: 0 },
    ])
    expect(seen.filter((id) => id === 'next')).toHaveLength(2) // deferred once, then handled in a later batch
    const effects = await db.sql`select o.entity_id from effects e join outbox o using (event_id) order by o.id`
    expect(effects.map((row) => row.entity_id)).toEqual(['before', 'next', 'later'])
  })

  it('a last handler that leaves the transaction aborted fails only its event: the batch still settles', async () => {
    const poller = startPoller({
      maxAttempts: 1,
      concurrency: 1,
      handlers: async (event, ctx) => {
        const tx = await ctx.tx()
        await tx`insert into effects (event_id) values (${event.event_id})`
        if (event.entity_id === 'swallow') await tx`select 1/0`.catch(() => {})
      },
    })
    for (const id of ['1', '2', 'swallow']) await emit(db.sql, { event_type: 'job.ran', entity_type: 'job', entity_id: id })
    await poller.start()
    await waitFor('settled', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is not null or dead_at is not null`)[0]!.n === 3)
    expect((await db.sql`select entity_id from outbox where processed_at is not null order by id`).map((row) => row.entity_id)).toEqual(['1', '2'])
    expect((await db.sql`select count(*)::int as n from effects`)[0]!.n).toBe(2)
  })

  it('a poller killed mid-batch leaves neither the write nor the mark', async () => {
    await emit(db.sql, { event_type: 'job.ran', entity_type: 'job', entity_id: 'killed' })
    const replica = startReplica(['--handlers', fixturePath('tx-handler.js'), '--no-supervise', '--interval-max', '500ms'], { DATABASE_URL: db.url, HANG_MS: '60000' })
    await waitFor('the write made inside the batch', async () => (await db.sql`select count(*)::int as n from pg_locks l join pg_class c on c.oid = l.relation where c.relname = 'effects'`)[0]!.n > 0, 20_000)
    replica.child.kill('SIGKILL')
    await replica.exited
    await waitFor('rolled back', async () => (await db.sql`select 1 from pg_stat_activity where datname = current_database() and state like 'idle in transaction%'`).length === 0, 10_000)
    expect((await db.sql`select count(*)::int as n from effects`)[0]!.n).toBe(0)
    expect((await db.sql`select processed_at, attempts from outbox`)[0]).toEqual({ processed_at: null, attempts: 0 })
  })
})

describe('explicit events and event context', () => {
  it('emit writes an event in the caller transaction (postgres.js and Kysely), with its context; a rollback takes it away', async () => {
    const seen: OutboxEvent[] = []
    const poller = startPoller({ handlers: (event) => void seen.push(event) })
    await db.sql.begin(async (tx) => {
      await withEventContext(tx, { correlationId: 'corr-1', actor: 'user:9', metadata: { tenant: 'acme' } })
      await emit(tx, { event_type: 'invoice.sent', entity_type: 'invoice', entity_id: 'inv-1', payload: { total: 12.5 }, metadata: { channel: 'email' } })
    })
    await db.sql.begin(async (tx) => {
      await emit(tx, { event_type: 'invoice.sent', entity_type: 'invoice', entity_id: 'inv-rolled-back' })
      throw new Error('rollback')
    }).catch(() => {})
    const kysely = new Kysely<unknown>({ dialect: new PostgresJSDialect({ postgres: db.sql }) })
    await kysely.transaction().execute(async (trx) => {
      await withEventContext(trx, { causationId: 'cause-7' })
      await emit(trx, { event_type: 'invoice.paid', entity_type: 'invoice', entity_id: 'inv-1' })
    })
    await db.sql`select public.outbox_emit('invoice.voided', 'invoice', 'inv-2', '{"reason": "typo"}')`
    await poller.start()
    await waitFor('three events handled', () => seen.length === 3)
    expect(seen.map((e) => [e.event_type, e.entity_id])).toEqual([['invoice.sent', 'inv-1'], ['invoice.paid', 'inv-1'], ['invoice.voided', 'inv-2']])
    expect(seen[0]!.payload).toEqual({ total: 12.5 })
    expect(seen[0]!.metadata).toMatchObject({ correlation_id: 'corr-1', actor: 'user:9', tenant: 'acme', channel: 'email' })
    expect(seen[1]!.metadata).toMatchObject({ causation_id: 'cause-7' })
    expect(seen[1]!.metadata).not.toHaveProperty('correlation_id')
    expect(seen[2]!.payload).toEqual({ reason: 'typo' })
    await expect(emit(db.sql, { event_type: '', entity_type: 'x', entity_id: '1' })).rejects.toThrow(/required/)
  })
})
