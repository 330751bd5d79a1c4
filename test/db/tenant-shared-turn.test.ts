import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createPoller, type Poller } from '../../src/poller/poller.js'
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

  it('announces each tenant\'s events apart, with their schema, and each batch finished before the next starts, so a crash is charged to the right tenant\'s rows', async () => {
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
