import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createPoller } from '../../src/create-poller.js'
import { type Poller } from '../../src/poller/poller.js'
import type { HandlerContext, OutboxEvent } from '../../src/types.js'
import { captureLogger } from '../support/capture-logger.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { createTenant, tenantUnprocessed } from '../support/tenants.js'
import { waitFor } from '../support/wait-for.js'

// One claim connection: the tenants with work at the same time share one batch transaction (shared-turn.ts),
// each tenant's batch still settled, retried, dead-lettered and announced as its own.
let db: TestDatabase
const running = new Set<Poller>()
const schemas = ['st_a', 'st_b', 'st_c']

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  for (const schema of [...schemas, 'st_x']) await createTenant(db.sql, schema)
})
afterEach(async () => {
  for (const poller of running) await poller.stop({ timeoutMs: 5000 })
  running.clear()
})
afterAll(async () => {
  await db.drop()
})

function start(input: Parameters<typeof createPoller>[0]): Poller {
  const poller = createPoller({ connectionString: db.url, schemas: 'st_a st_b st_c', intervalMin: 20, intervalMax: 200, retryDelay: 10, retryDelayMax: 10, ...input })
  running.add(poller)
  return poller
}

/** Every tenant's first turns over, each asleep (its flag up): the next writes notify, and wake them together. */
async function allAsleep(into: readonly string[] = schemas): Promise<void> {
  await waitFor('every tenant asleep', async () => {
    const flags = await Promise.all(into.map(async (schema) => (await db.sql.unsafe(`select asleep from ${schema}.outbox_wakeup`))[0]?.asleep === true))
    return flags.every(Boolean)
  })
  // and their last look (the one after the flag went up) over, a safety poll later
  await new Promise((resolve) => setTimeout(resolve, 300))
}

/** One order in each of `schemas`, in one transaction: their notifications come together. */
async function writeAll(id: number, into: readonly string[] = schemas): Promise<void> {
  await allAsleep(into)
  await db.sql.begin(async (tx) => {
    for (const schema of into) await tx.unsafe(`insert into ${schema}.orders (id, note) values ($1, 'shared')`, [id])
  })
}

/** Handled events by `<schema>/<entity id>`, with the batch transaction each ran in (seen through ctx.tx()). */
function recorder(fail?: (event: OutboxEvent) => boolean) {
  const handled: Array<{ key: string; xid: string; attempt: number }> = []
  const handler = async (event: OutboxEvent, ctx: HandlerContext) => {
    const tx = await ctx.tx()
    const [row] = await tx<Array<{ xid: string }>>`select txid_current()::text as xid`
    handled.push({ key: `${event.schema}/${event.entity_id}`, xid: row!.xid, attempt: event.attempt })
    if (fail?.(event)) throw new Error(`failing ${event.schema}`)
  }
  return { handled, handler }
}

describe('tenants sharing a batch transaction', () => {
  it('handles every tenant\'s event once in one transaction; a failing handler is retried in its own tenant only', async () => {
    const { handled, handler } = recorder((event) => event.schema === 'st_c' && event.attempt === 1)
    const poller = start({ handlers: handler })
    await poller.start()
    await writeAll(100)
    await waitFor('every event handled, st_c\'s twice', () => handled.length === 4)
    const first = handled.filter((entry) => entry.attempt === 1)
    expect(first.map((entry) => entry.key).sort()).toEqual(['st_a/100', 'st_b/100', 'st_c/100'])
    expect(new Set(first.map((entry) => entry.xid)).size).toBe(1) // one transaction for the three
    await waitFor('st_c\'s retry settled', async () => (await tenantUnprocessed(db.sql, 'st_c')) === 0)
    const [retried] = await db.sql`select attempts, last_error from st_c.outbox where entity_id = '100'`
    expect(retried).toMatchObject({ attempts: 1, last_error: 'failing st_c' })
    for (const schema of ['st_a', 'st_b']) {
      expect(await tenantUnprocessed(db.sql, schema)).toBe(0)
      expect((await db.sql.unsafe(`select attempts from ${schema}.outbox where entity_id = '100'`))[0]!.attempts).toBe(0)
    }
    expect(handled.filter((entry) => entry.key !== 'st_c/100')).toHaveLength(2)
  })

  it('a tenant whose settlement fails is rolled back alone: the others\' events in the same transaction settle, once', async () => {
    await db.sql.unsafe(`create function st_b.refuse() returns trigger language plpgsql as $$ begin raise exception 'st_b refuses'; end $$;
      create trigger refuse before update of processed_at on st_b.outbox for each row execute function st_b.refuse()`)
    const log = captureLogger()
    const { handled, handler } = recorder()
    const poller = start({ handlers: handler, logger: log })
    await poller.start()
    await writeAll(200)
    await waitFor('st_b\'s settlement refused', () => log.entries.some((entry) => entry.msg === 'batch failed and rolled back'))
    await waitFor('st_a and st_c settled', async () => (await tenantUnprocessed(db.sql, 'st_a')) + (await tenantUnprocessed(db.sql, 'st_c')) === 0)
    const first = handled.filter((entry) => entry.key.endsWith('/200'))
    expect(new Set(first.slice(0, 3).map((entry) => entry.xid)).size).toBe(1) // they shared the transaction
    expect(log.entries.filter((entry) => entry.level === 'error').filter((entry) => entry.fields.schema !== 'st_b').map((entry) => `${entry.msg} ${JSON.stringify(entry.fields)}`)).toEqual([])
    expect(await tenantUnprocessed(db.sql, 'st_b')).toBe(1)
    await db.sql.unsafe('drop trigger refuse on st_b.outbox; drop function st_b.refuse()')
    await waitFor('st_b settled once its outbox takes it', async () => (await tenantUnprocessed(db.sql, 'st_b')) === 0)
    // st_b's event was handled again (its settlement was undone); the others' exactly once
    expect(handled.filter((entry) => entry.key === 'st_a/200' || entry.key === 'st_c/200')).toHaveLength(2)
    expect(handled.filter((entry) => entry.key === 'st_b/200').length).toBeGreaterThan(1)
  })

  it('announces each tenant\'s events apart, with their schema, and under a supervisor each batch finished before the next starts, so a crash is charged to the right tenant\'s rows only', async () => {
    const announced: string[][] = []
    // in flight as the supervisor counts them: announced, not yet reported finished
    const inFlight = new Set<string>()
    const alongside: string[] = []
    const { handled, handler } = recorder()
    const poller = start({ handlers: handler, beforeDispatch: (ids, finished) => {
      for (const id of finished) inFlight.delete(id)
      if (ids.length === 0) return
      alongside.push(...[...inFlight].filter((id) => !ids.some((mine) => mine.startsWith(id.slice(0, id.lastIndexOf(':') + 1)))))
      for (const id of ids) inFlight.add(id)
      announced.push(ids)
    } })
    await poller.start()
    await writeAll(300)
    await waitFor('every event handled', () => handled.filter((entry) => entry.key.endsWith('/300')).length === 3)
    expect(new Set(handled.filter((entry) => entry.key.endsWith('/300')).map((entry) => entry.xid)).size).toBe(1)
    const rows = await Promise.all(schemas.map(async (schema) => `${schema}:${(await db.sql.unsafe(`select id::text from ${schema}.outbox where entity_id = '300'`))[0]!.id}`))
    for (const ids of announced) expect(new Set(ids.map((id) => id.slice(0, id.lastIndexOf(':')))).size).toBe(1)
    // a tenant's batch is reported finished before the next tenant's starts: a crash then charges the next one only
    expect(alongside).toEqual([])
    expect(announced.flat()).toEqual(expect.arrayContaining(rows))
  })

  it('a suspect (claimed alone after its batch died) runs first and alone in the transaction: no other tenant\'s handler runs beside it', async () => {
    // st_a's event as a dead batch leaves it (charged, suspect, due); st_b's and st_c's fresh: the first turn takes all three
    await db.sql.unsafe(`insert into st_a.orders (id, note) values (350, 'suspect'); insert into st_b.orders (id, note) values (350, 'fresh'); insert into st_c.orders (id, note) values (350, 'fresh')`)
    await db.sql.unsafe(`update st_a.outbox set suspect = true, attempts = 1, retry_at = now() where entity_id = '350'`)
    const steps: string[] = []
    const { handled, handler } = recorder()
    const poller = start({ handlers: async (event: OutboxEvent, ctx: HandlerContext) => {
      steps.push(`start ${event.schema}`)
      await new Promise((resolve) => setTimeout(resolve, 5))
      await handler(event, ctx)
      steps.push(`end ${event.schema}`)
    } })
    await poller.start()
    await waitFor('every event handled', () => handled.filter((entry) => entry.key.endsWith('/350')).length === 3)
    expect(new Set(handled.filter((entry) => entry.key.endsWith('/350')).map((entry) => entry.xid)).size).toBe(1) // one turn
    expect(steps.slice(0, 2)).toEqual(['start st_a', 'end st_a'])
    // the fresh batches then at once
    expect(steps.slice(2, 4).sort()).toEqual(['start st_b', 'start st_c'])
    await waitFor('every event settled', async () => (await Promise.all(schemas.map((schema) => tenantUnprocessed(db.sql, schema)))).every((n) => n === 0))
  })

  it('the tenants\' batches in one transaction run at the same time: a handler waiting for the other tenants\' handlers is not waiting for itself', async () => {
    await db.sql`create table shared_writes (schema text primary key)`
    const started = new Set<string>()
    let allStarted!: () => void
    const barrier = new Promise<void>((resolve) => (allStarted = resolve))
    const { handled, handler } = recorder()
    const poller = start({ handlerTimeout: 10_000, handlers: async (event: OutboxEvent, ctx: HandlerContext) => {
      if (event.entity_id === '500') {
        // handled one tenant after another, the first would wait here until its timeout fails it
        started.add(event.schema)
        if (started.size === schemas.length) allStarted()
        await barrier
        // and their ctx.tx() writes take turns on the one connection
        const tx = await ctx.tx()
        await tx`insert into shared_writes (schema) values (${event.schema})`
      }
      await handler(event, ctx)
    } })
    await poller.start()
    await writeAll(500)
    await waitFor('every event handled', () => handled.filter((entry) => entry.key.endsWith('/500')).length === 3)
    expect(new Set(handled.filter((entry) => entry.key.endsWith('/500')).map((entry) => entry.xid)).size).toBe(1)
    await waitFor('every event settled', async () => (await Promise.all(schemas.map((schema) => tenantUnprocessed(db.sql, schema)))).every((n) => n === 0))
    for (const schema of schemas) {
      expect((await db.sql.unsafe(`select attempts from ${schema}.outbox where entity_id = '500'`))[0]!.attempts).toBe(0)
    }
    expect((await db.sql`select schema from shared_writes order by schema`).map((row) => row.schema)).toEqual(schemas)
    expect(handled.filter((entry) => entry.key.endsWith('/500'))).toHaveLength(3)
  })

  it('--concurrency bounds the handlers across the tenants of a transaction, taken in turn: one tenant\'s batch does not stand in front of another\'s', async () => {
    let running = 0
    let most = 0
    const order: string[] = []
    const { handled, handler } = recorder()
    const poller = start({ concurrency: 2, handlers: async (event: OutboxEvent, ctx: HandlerContext) => {
      most = Math.max(most, ++running)
      order.push(event.schema)
      await new Promise((resolve) => setTimeout(resolve, 2))
      running--
      await handler(event, ctx)
    } })
    await poller.start()
    await allAsleep(['st_a', 'st_b'])
    await db.sql.begin(async (tx) => {
      for (const schema of ['st_a', 'st_b']) await tx.unsafe(`insert into ${schema}.orders (id, note) select g, 'many' from generate_series(601, 610) g`)
    })
    await waitFor('every event handled', () => handled.filter((entry) => /\/6(0[1-9]|10)$/.test(entry.key)).length === 20)
    const shared = handled.filter((entry) => /\/6(0[1-9]|10)$/.test(entry.key))
    expect(shared.some((entry) => entry.key.startsWith('st_a/') && shared.some((other) => other.xid === entry.xid && other.key.startsWith('st_b/')))).toBe(true)
    expect(most).toBe(2)
    // taken in turn: neither tenant's ten events all before the other's first
    expect(order.indexOf('st_b')).toBeLessThan(order.lastIndexOf('st_a'))
    expect(order.indexOf('st_a')).toBeLessThan(order.lastIndexOf('st_b'))
  })

  it('while tenants share a transaction, each one\'s batch is one round of handlers (--concurrency events): a backlog goes on in the next turns, each event once', async () => {
    const { handled, handler } = recorder()
    const poller = start({ concurrency: 3, handlers: handler })
    await poller.start()
    await allAsleep(['st_a', 'st_b'])
    await db.sql.begin(async (tx) => {
      await tx.unsafe(`insert into st_a.orders (id, note) select g, 'backlog' from generate_series(701, 720) g`)
      await tx.unsafe(`insert into st_b.orders (id, note) select g, 'backlog' from generate_series(701, 703) g`)
    })
    const ours = () => handled.filter((entry) => /\/7[0-2]\d$/.test(entry.key))
    await waitFor('every event handled', () => ours().length >= 23)
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(ours().map((entry) => entry.key).sort()).toEqual([...Array.from({ length: 20 }, (_, i) => `st_a/${701 + i}`), 'st_b/701', 'st_b/702', 'st_b/703'].sort())
    // in each transaction both tenants shared, no more than --concurrency events of either (alone, a tenant takes a full batch)
    const byXid = new Map<string, Array<{ key: string }>>()
    for (const entry of ours()) byXid.set(entry.xid, [...(byXid.get(entry.xid) ?? []), entry])
    const shared = [...byXid.values()].filter((entries) => new Set(entries.map((entry) => entry.key.split('/')[0])).size === 2)
    expect(shared.length).toBeGreaterThan(0)
    for (const entries of shared) for (const schema of ['st_a', 'st_b']) expect(entries.filter((entry) => entry.key.startsWith(`${schema}/`)).length).toBeLessThanOrEqual(3)
  })

  it('a handler\'s ctx.tx() in a shared transaction plans its statements as configured, not as the claims do', async () => {
    const plans = new Map<string, string>()
    const { handled, handler } = recorder()
    const poller = start({ handlers: async (event: OutboxEvent, ctx: HandlerContext) => {
      const tx = await ctx.tx()
      const [row] = await tx<Array<{ plans: string }>>`select current_setting('plan_cache_mode') as plans`
      plans.set(event.schema, row!.plans)
      await handler(event, ctx)
    } })
    await poller.start()
    await writeAll(700)
    await waitFor('every event handled', () => handled.filter((entry) => entry.key.endsWith('/700')).length === 3)
    expect(new Set(handled.filter((entry) => entry.key.endsWith('/700')).map((entry) => entry.xid)).size).toBe(1)
    // the claims ran with force_generic_plan (set local); the handlers see the server's default
    expect(Object.fromEntries(plans)).toEqual({ st_a: 'auto', st_b: 'auto', st_c: 'auto' })
  })

  it('a tenant whose outbox is dropped while it waits is let go; the others it was claimed with are served', async () => {
    const log = captureLogger()
    const { handled, handler } = recorder()
    const poller = start({ schemas: 'st_*', handlers: handler, logger: log })
    await poller.start()
    await writeAll(400, [...schemas, 'st_x'])
    await waitFor('every event handled', () => handled.filter((entry) => entry.key.endsWith('/400')).length === 4)
    await db.sql`drop schema st_x cascade`
    // the next safety poll's statement fails on st_x: it wakes every waiting tenant, whose claims go out together
    await writeAll(401)
    await waitFor('st_x let go', () => log.entries.some((entry) => entry.msg === 'tenant let go: its outbox is gone' && entry.fields.schema === 'st_x'))
    await waitFor('the others handled', () => handled.filter((entry) => entry.key.endsWith('/401')).length === 3)
    await writeAll(402)
    await waitFor('the others handled again', () => handled.filter((entry) => entry.key.endsWith('/402')).length === 3)
    expect(handled.filter((entry) => entry.key.endsWith('/401') || entry.key.endsWith('/402'))).toHaveLength(6)
    expect(log.entries.filter((entry) => entry.level === 'error')).toEqual([])
  })
})
