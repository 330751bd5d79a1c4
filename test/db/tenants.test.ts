import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { outboxTenantBacklog } from '../../src/observe/tenant-backlog.js'
import { outboxCreateOrderingIndexes } from '../../src/outbox/ordering-index.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { createPoller } from '../../src/create-poller.js'
import { type Poller } from '../../src/poller/poller.js'
import type { OutboxEvent } from '../../src/types.js'
import { captureLogger } from '../support/capture-logger.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { countStatements } from '../support/statement-counter.js'
import { createTenant, tenantUnprocessed, writeOrders } from '../support/tenants.js'
import { waitFor } from '../support/wait-for.js'

let db: TestDatabase
const running = new Set<Poller>()

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  for (const schema of ['tenant_a', 'tenant_b', 'tenant_c', 'tenantx']) await createTenant(db.sql, schema)
})
afterEach(async () => {
  for (const poller of running) await poller.stop({ timeoutMs: 5000 })
  running.clear()
})
afterAll(async () => {
  expect(running.size).toBe(0)
  await db.drop()
})

function start(input: Parameters<typeof createPoller>[0]): Poller {
  const poller = createPoller({ connectionString: db.url, intervalMin: 20, intervalMax: 200, ...input })
  running.add(poller)
  return poller
}

describe('a poller with schemas', () => {
  it('handles every event of every matching schema once, each with its schema, and no other schema', async () => {
    const seen: Array<{ schema: string; id: string }> = []
    const poller = start({ schemas: 'tenant_*', handlers: (event: OutboxEvent) => void seen.push({ schema: event.schema, id: event.entity_id }) })
    await poller.start()
    for (const schema of ['tenant_a', 'tenant_b', 'tenant_c', 'tenantx']) await writeOrders(db.sql, schema, 30, 1)
    await waitFor('tenant events handled', () => seen.length >= 90)
    const bySchema = Object.groupBy(seen, (entry) => entry.schema)
    expect(Object.keys(bySchema).sort()).toEqual(['tenant_a', 'tenant_b', 'tenant_c'])
    for (const entries of Object.values(bySchema)) expect(new Set(entries!.map((entry) => entry.id)).size).toBe(30)
    expect(seen).toHaveLength(90)
    expect(await tenantUnprocessed(db.sql, 'tenantx')).toBe(30) // `_` is literal: tenantx does not match tenant_*
    await db.sql`delete from tenantx.outbox`
  })

  it('serves a schema created while it runs, lets a dropped one go quietly, and skips one without an outbox with one warning', async () => {
    const log = captureLogger()
    const seen: string[] = []
    const poller = start({ schemas: ['tenant_*'], discoverInterval: 200, logger: log, handlers: (event: OutboxEvent) => void seen.push(`${event.schema}/${event.entity_id}`) })
    await poller.start()
    await db.sql`create schema tenant_bare` // a tenant being created: no outbox yet
    await createTenant(db.sql, 'tenant_new')
    await writeOrders(db.sql, 'tenant_new', 5)
    await waitFor('the new tenant served', () => seen.filter((entry) => entry.startsWith('tenant_new/')).length === 5)
    await waitFor('the bare schema reported', () => log.entries.some((entry) => entry.fields.schema === 'tenant_bare'))
    await db.sql`drop schema tenant_new cascade`
    await waitFor('the dropped tenant let go', () => log.entries.some((entry) => entry.msg.startsWith('tenant let go') && entry.fields.schema === 'tenant_new'))
    await writeOrders(db.sql, 'tenant_a', 3, 1000)
    await waitFor('the others still served', () => seen.filter((entry) => entry.startsWith('tenant_a/100')).length === 3)
    // several discoveries later: still one warning for the bare schema, and no error at all
    await new Promise((resolve) => setTimeout(resolve, 600))
    expect(log.entries.filter((entry) => entry.fields.schema === 'tenant_bare')).toHaveLength(1)
    expect(log.entries.filter((entry) => entry.level === 'error')).toEqual([])
    await db.sql`drop schema tenant_bare`
  })

  it('does not serve a tenant whose recorded ordering differs, says so once, and serves the others', async () => {
    await db.sql`insert into tenant_b.outbox_settings (name, value) values ('ordering', 'entity, on dead: continue') on conflict (name) do update set value = excluded.value`
    const log = captureLogger()
    const seen: string[] = []
    const poller = start({ schemas: 'tenant_a tenant_b', discoverInterval: 200, logger: log, handlers: (event: OutboxEvent) => void seen.push(event.schema) })
    await poller.start()
    await writeOrders(db.sql, 'tenant_a', 2, 2000)
    await writeOrders(db.sql, 'tenant_b', 2, 2000)
    await waitFor('tenant_a served', () => seen.length === 2)
    await new Promise((resolve) => setTimeout(resolve, 600))
    expect(seen).toEqual(['tenant_a', 'tenant_a'])
    const refusals = log.entries.filter((entry) => entry.fields.schema === 'tenant_b' && entry.fields.problem === 'ordering differs')
    expect(refusals).toHaveLength(1)
    expect(refusals[0]!.msg).toContain('ordering "entity, on dead: continue"')
    expect((poller as unknown as { tenants(): { problems: Map<string, string> } }).tenants().problems.get('tenant_b')).toBe('ordering differs')
    await db.sql`delete from tenant_b.outbox_settings where name = 'ordering'`
    await waitFor('tenant_b served once its mode is cleared', () => seen.filter((schema) => schema === 'tenant_b').length === 2)
  })

  it('does not serve a tenant that lacks the ordering indexes, names the migrate that builds them for it, and the metric counts it so', async () => {
    await outboxCreateOrderingIndexes(db.sql, outboxTable('tenant_a', 'outbox'), 'entity')
    await db.sql`delete from tenant_a.outbox_settings where name = 'ordering'` // recorded 'none' by the pollers before
    const log = captureLogger()
    const seen: string[] = []
    const poller = start({ schemas: 'tenant_a tenant_b', ordering: 'entity', discoverInterval: 200, logger: log, handlers: (event: OutboxEvent) => void seen.push(event.schema) })
    await poller.start()
    await writeOrders(db.sql, 'tenant_a', 2, 2500)
    await waitFor('tenant_a served', () => seen.length === 2)
    const refusals = log.entries.filter((entry) => entry.fields.schema === 'tenant_b')
    expect(refusals).toHaveLength(1)
    expect(refusals[0]!.fields.problem).toBe('ordering indexes missing')
    expect(refusals[0]!.msg).toContain('run `outbox-poller migrate --schema tenant_b --ordering entity`')
    expect((poller as unknown as { tenants(): { problems: Map<string, string> } }).tenants().problems.get('tenant_b')).toBe('ordering indexes missing')
    const backlog = await outboxTenantBacklog(db.sql, ['tenant_a', 'tenant_b'], 'outbox', { ordering: 'entity', onDead: 'continue' })
    expect(backlog.notServed).toEqual([{ schema: 'tenant_b', problem: 'ordering indexes missing' }])
    expect(backlog.tenants.map((tenant) => tenant.schema)).toEqual(['tenant_a'])
    // the mode the others run with: tenant_b is not theirs to count apart
    expect((await outboxTenantBacklog(db.sql, ['tenant_a', 'tenant_b'], 'outbox', { ordering: 'none', onDead: 'continue' })).notServed).toEqual([{ schema: 'tenant_a', problem: 'ordering differs' }])
    await poller.stop()
    running.delete(poller)
    await db.sql`delete from tenant_a.outbox_settings where name = 'ordering'`
    await db.sql.unsafe('drop index tenant_a.outbox_entity_pending, tenant_a.outbox_truncated_pending')
  })

  it('charges a failure, retries and dead letters in the tenant the event came from', async () => {
    const attempts = new Map<string, number>()
    const poller = start({ schemas: 'tenant_*', maxAttempts: 2, retryDelay: 10, retryDelayMax: 10, handlers: (event: OutboxEvent) => {
      attempts.set(`${event.schema}/${event.entity_id}`, event.attempt)
      if (event.schema === 'tenant_c' && event.entity_id === '3001') throw new Error('bad order')
    } })
    await poller.start()
    await writeOrders(db.sql, 'tenant_c', 2, 3000)
    await writeOrders(db.sql, 'tenant_a', 1, 3001)
    await waitFor('the failing event dead', async () => (await db.sql`select count(*)::int as n from tenant_c.outbox where dead_at is not null`)[0]!.n === 1)
    const [dead] = await db.sql`select entity_id, attempts, last_error from tenant_c.outbox where dead_at is not null`
    expect(dead).toMatchObject({ entity_id: '3001', attempts: 2, last_error: 'bad order' })
    expect(attempts.get('tenant_a/3001')).toBe(1)
    expect((await db.sql`select count(*)::int as n from tenant_a.outbox where dead_at is not null or attempts > 0`)[0]!.n).toBe(0)
  })

  it('claims events that become claimable without a notification (a killed replica\'s batch rolling back), within the safety poll', async () => {
    const seen: string[] = []
    const poller = start({ schemas: 'tenant_*', handlers: (event: OutboxEvent) => void seen.push(`${event.schema}/${event.entity_id}`) })
    await poller.start()
    await writeOrders(db.sql, 'tenant_b', 5, 5000)
    await waitFor('the first events handled', () => seen.filter((entry) => entry.startsWith('tenant_b/500')).length === 5)
    // committed events no claim may take yet (parked), then released by a transaction that inserts nothing: no
    // NOTIFY, as when a dead replica's batch rolls back; the poller meanwhile found the tenant empty
    await db.sql`insert into tenant_b.outbox (event_type, entity_type, entity_id, payload, retry_at)
                 select 'order.created', 'order', g::text, '{}', 'infinity' from generate_series(6000, 6004) g`
    await new Promise((resolve) => setTimeout(resolve, 600))
    expect(seen.filter((entry) => entry.startsWith('tenant_b/600'))).toHaveLength(0)
    await db.sql`update tenant_b.outbox set retry_at = null where retry_at = 'infinity'`
    await waitFor('the released events handled', () => seen.filter((entry) => entry.startsWith('tenant_b/600')).length === 5, 10_000)
  })

  it('idle tenants cost one safety probe per interval-max between them, not a claim each, and the loop still reports itself alive', async () => {
    const reports: number[] = []
    const poller = start({ schemas: 'tenant_a tenant_b tenant_c', handlers: () => {}, afterBatch: (report) => void reports.push(report.claimed) })
    await poller.start()
    // each tenant's first turns: its claim, the flag raised, one more look
    await waitFor('every tenant looked at twice', () => reports.length >= 6)
    await new Promise((resolve) => setTimeout(resolve, 500))
    const from = reports.length
    const loopFrom = poller.lastLoopAt
    await new Promise((resolve) => setTimeout(resolve, 1000))
    // intervalMax 200 ms: at most one probe per 200 ms for the three tenants (one claim each per 200 ms before)
    expect(reports.length - from).toBeLessThanOrEqual(7)
    expect(reports.length - from).toBeGreaterThan(0)
    expect(poller.lastLoopAt).toBeGreaterThan(loopFrom)
  })

  it('idle tenants cost no more than one statement per tenant per interval-max, counted on the wire', async () => {
    const counter = await countStatements(db.url)
    try {
      const reports: number[] = []
      const poller = start({ connectionString: counter.url, schemas: 'tenant_a tenant_b tenant_c', discoverInterval: 600_000, handlers: () => {}, afterBatch: (report) => void reports.push(report.claimed) })
      await poller.start()
      await waitFor('every tenant looked at twice', () => reports.length >= 6)
      // settled: a whole interval-max (200 ms) without a statement per tenant
      let settled = counter.statements
      await waitFor('the first turns over', async () => {
        const before = settled
        await new Promise((resolve) => setTimeout(resolve, 200))
        settled = counter.statements
        return settled - before <= 3
      })
      const from = counter.statements
      await new Promise((resolve) => setTimeout(resolve, 2000))
      const statements = counter.statements - from
      // 2 s is 10 intervals of 200 ms, 11 safety polls at most: at most 3 tenants × 11; one probe statement each in fact
      expect(statements).toBeLessThanOrEqual(3 * 11)
      expect(statements).toBeLessThanOrEqual(11)
      expect(statements).toBeGreaterThan(0)
    } finally {
      for (const poller of running) await poller.stop()
      running.clear()
      await counter.close()
    }
  })

  it('with tenantConcurrency 2, a slow batch in one tenant does not hold back another tenant; a tenant\'s own batches never overlap', async () => {
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    let runningInA = 0
    let mostInA = 0
    const seen: string[] = []
    const poller = start({ schemas: 'tenant_a tenant_b', tenantConcurrency: 2, batchSize: 1, handlers: async (event: OutboxEvent) => {
      if (event.schema === 'tenant_a') {
        mostInA = Math.max(mostInA, ++runningInA)
        await released
        runningInA--
      }
      seen.push(`${event.schema}/${event.entity_id}`)
    } })
    await poller.start()
    await writeOrders(db.sql, 'tenant_a', 2, 7000) // two batches of one: the second must wait for the first
    await waitFor('tenant_a\'s batch in flight', () => runningInA === 1)
    await writeOrders(db.sql, 'tenant_b', 3, 7000)
    await waitFor('tenant_b handled while tenant_a\'s batch is stuck', () => seen.filter((entry) => entry.startsWith('tenant_b/700')).length === 3)
    expect(runningInA).toBe(1)
    release()
    await waitFor('tenant_a handled', () => seen.filter((entry) => entry.startsWith('tenant_a/700')).length === 2)
    expect(mostInA).toBe(1)
  })

  it('with tenantConcurrency 1, a slow batch in one tenant holds back the others (the trade the option is for)', async () => {
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    let inA = false
    const seen: string[] = []
    const poller = start({ schemas: 'tenant_a tenant_b', handlers: async (event: OutboxEvent) => {
      if (event.schema === 'tenant_a') {
        inA = true
        await released
      }
      seen.push(`${event.schema}/${event.entity_id}`)
    } })
    await poller.start()
    await writeOrders(db.sql, 'tenant_a', 1, 7100)
    await waitFor('tenant_a\'s batch in flight', () => inA)
    await writeOrders(db.sql, 'tenant_b', 1, 7100)
    await new Promise((resolve) => setTimeout(resolve, 500))
    expect(seen).toEqual([])
    release()
    await waitFor('both handled', () => seen.length === 2)
    expect(seen).toEqual(['tenant_a/7100', 'tenant_b/7100'])
  })

  it('--unmatched hold: a tenant\'s unmatched event waits, uncharged, in its own outbox, while that tenant\'s other events and the other tenants go on', async () => {
    const seen: string[] = []
    const poller = start({ schemas: 'tenant_a tenant_b', unmatched: 'hold', handlers: { 'order.*': (event: OutboxEvent) => void seen.push(`${event.schema}/${event.entity_id}`) } })
    await poller.start()
    await db.sql`insert into tenant_a.outbox (event_type, entity_type, entity_id, payload) values ('invoice.created', 'invoice', '8000', '{}')`
    await writeOrders(db.sql, 'tenant_a', 2, 8000)
    await writeOrders(db.sql, 'tenant_b', 2, 8000)
    await waitFor('the orders handled', () => seen.length === 4)
    // handlers run before their batch commits: wait for the settlement of the invoice's batch to be visible
    await waitFor('the invoice settled', async () => (await db.sql`select 1 from tenant_a.outbox where event_type = 'invoice.created' and retry_at is not null`).length > 0)
    const [held] = await db.sql`select processed_at, dead_at, attempts, retry_at > now() as later from tenant_a.outbox where event_type = 'invoice.created'`
    expect(held).toMatchObject({ processed_at: null, dead_at: null, attempts: 0, later: true })
    await poller.stop()
    running.delete(poller)
    // a replica that has a handler for it takes it
    const other: string[] = []
    await start({ schemas: 'tenant_*', handlers: { 'invoice.*': (event: OutboxEvent) => void other.push(`${event.schema}/${event.entity_id}`) } }).start()
    await waitFor('the held event handled by a replica with its handler', () => other.includes('tenant_a/8000'), 10_000)
    expect(other).toEqual(['tenant_a/8000'])
  })
})
