import { createServer } from 'node:net'
import parsePrometheusTextFormat from 'parse-prometheus-text-format'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { fixturePath, killReplicas, type Replica, runCli, startReplica } from '../support/cli.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { partitionRange, periodStart } from '../../src/outbox/partition-upkeep.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { createTenant, writeOrders } from '../support/tenants.js'
import { waitFor } from '../support/wait-for.js'

// /metrics of a replica serving --schemas: the backlog gauges over every served tenant (totals, or one series
// per tenant with --metrics-per-schema), the tenants not served, and the per-event counters.
let db: TestDatabase
const replicas: Replica[] = []

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  for (const schema of ['tm_a', 'tm_b', 'tm_c']) await createTenant(db.sql, schema)
  await db.sql`create schema tm_bare` // a tenant being created: no outbox yet
  // tm_c's pollers run in entity order: a replica started without it does not serve tm_c
  await db.sql`insert into tm_c.outbox_settings (name, value) values ('ordering', 'entity, on dead: continue')`
  // pending events no claim may take (due never), and a dead one: the backlog stays as written while scraped
  const waiting = (schema: string, n: number) => db.sql.unsafe(`insert into ${schema}.outbox (event_type, entity_type, entity_id, payload, retry_at, created_at)
    select 'order.created', 'order', 'w' || g, '{}', 'infinity', now() - interval '1 hour' from generate_series(1, ${n}) g`)
  await waiting('tm_a', 3)
  await waiting('tm_b', 2)
  await waiting('tm_c', 7)
  await db.sql`insert into tm_a.outbox (event_type, entity_type, entity_id, payload, attempts, dead_at, last_error) values ('order.created', 'order', 'd1', '{}', 5, now(), 'boom')`
})
afterEach(async () => {
  await killReplicas(replicas)
})
afterAll(async () => {
  await db?.drop()
})

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number }
      probe.close(() => resolve(port))
    })
  })
}

type Sample = { value?: string; labels?: Record<string, string> }
async function scrape(port: number): Promise<Map<string, Sample[]>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  return new Map((parsePrometheusTextFormat(text) as Array<{ name: string; metrics: Sample[] }>).map((family) => [family.name, family.metrics]))
}

/** The series of `name` with exactly these labels, as a number (undefined: no such series). */
function value(families: Map<string, Sample[]>, name: string, labels: Record<string, string> = {}): number | undefined {
  const found = families.get(name)?.find((sample) => {
    const own = sample.labels ?? {}
    return Object.keys(own).length === Object.keys(labels).length && Object.entries(labels).every(([key, want]) => own[key] === want)
  })
  return found?.value === undefined ? undefined : Number(found.value)
}

async function replica(args: string[]): Promise<number> {
  const port = await freePort()
  replicas.push(startReplica(['run', '--schemas', 'tm_*', '--handlers', fixturePath('tenant-handler.js'), '--http', String(port), '--interval-max', '500ms', ...args], { DATABASE_URL: db.url, RECORD_FILE: '/dev/null' }))
  await waitFor('metrics served', async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200, 20_000)
  return port
}

describe('metrics of a replica serving many tenants', () => {
  it('by default, the backlog gauges are the totals over the served tenants, with the tenants not served counted by problem', async () => {
    const port = await replica([])
    await writeOrders(db.sql, 'tm_a', 2, 1)
    await writeOrders(db.sql, 'tm_b', 1, 1)
    const families = await waitFor('handled and sampled', async () => {
      const scraped = await scrape(port)
      return value(scraped, 'outbox_events_handled_total', { event_type: 'order.created' }) === 3 && value(scraped, 'outbox_tenants') === 2 ? scraped : undefined
    }, 20_000, 100)
    expect(value(families, 'outbox_pending_events')).toBe(5) // tm_a 3 + tm_b 2; tm_c (not served) not counted
    expect(value(families, 'outbox_dead_events')).toBe(1)
    expect(value(families, 'outbox_oldest_pending_age_seconds')).toBeGreaterThanOrEqual(3600)
    expect(value(families, 'outbox_tenants_not_served', { problem: 'no outbox' })).toBe(1)
    expect(value(families, 'outbox_tenants_not_served', { problem: 'ordering differs' })).toBe(1)
    expect(families.get('outbox_pending_events')!.some((sample) => sample.labels?.schema !== undefined)).toBe(false)
  })

  it('--metrics-per-schema: a schema label on the counters and the backlog gauges, one series per served tenant', async () => {
    const port = await replica(['--metrics-per-schema'])
    await writeOrders(db.sql, 'tm_a', 2, 100)
    await writeOrders(db.sql, 'tm_b', 1, 100)
    const families = await waitFor('handled and sampled', async () => {
      const scraped = await scrape(port)
      const handled = (schema: string) => value(scraped, 'outbox_events_handled_total', { event_type: 'order.created', schema })
      return handled('tm_a') === 2 && handled('tm_b') === 1 && value(scraped, 'outbox_pending_events', { schema: 'tm_a' }) !== undefined ? scraped : undefined
    }, 20_000, 100)
    expect(value(families, 'outbox_pending_events', { schema: 'tm_a' })).toBe(3)
    expect(value(families, 'outbox_pending_events', { schema: 'tm_b' })).toBe(2)
    expect(value(families, 'outbox_pending_events', { schema: 'tm_c' })).toBeUndefined()
    expect(value(families, 'outbox_pending_events')).toBeUndefined() // no unlabelled total: sum() gives it
    expect(value(families, 'outbox_dead_events', { schema: 'tm_a' })).toBe(1)
    expect(value(families, 'outbox_dead_events', { schema: 'tm_b' })).toBe(0)
    expect(value(families, 'outbox_oldest_pending_age_seconds', { schema: 'tm_b' })).toBeGreaterThanOrEqual(3600)
    expect(value(families, 'outbox_tenants_not_served', { problem: 'ordering differs', schema: 'tm_c' })).toBe(1)
    expect(value(families, 'outbox_tenants_not_served', { problem: 'no outbox', schema: 'tm_bare' })).toBe(1)
  })

  it("a partitioned tenant's upkeep: the fewest partitions ahead and the default-partition events in the gauges, its warnings in /healthz", async () => {
    await db.sql`create schema tm_p`
    await migrate({ sql: db.sql, schema: 'tm_p', partitionBy: 'day' })
    const [{ now }] = await db.sql<Array<{ now: Date }>>`select now()`
    await db.sql.unsafe(`drop table ${partitionRange(outboxTable('tm_p', 'outbox'), 'day', periodStart(now, 'day')).qualified}`)
    await db.sql`insert into tm_p.outbox (event_type, entity_type, entity_id, payload) values ('order.created', 'order', 'p1', '{}')` // lands in the default partition
    const port = await replica([])
    const families = await waitFor('the layouts sampled', async () => {
      const scraped = await scrape(port)
      return value(scraped, 'outbox_tenants') === 3 && value(scraped, 'outbox_partitions_ahead', { partition_by: 'day' }) !== undefined ? scraped : undefined
    }, 20_000, 100)
    expect(value(families, 'outbox_partitions_ahead', { partition_by: 'day' })).toBe(-1) // the plain tenants have no series of their own
    expect(families.get('outbox_partitions_ahead')).toHaveLength(1)
    expect(value(families, 'outbox_default_partition_events')).toBe(1)
    const health = (await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()) as { warnings: string[] }
    expect(health.warnings.filter((warning) => warning.startsWith('tm_p: '))).toEqual([
      "tm_p: the default partition holds 1 events that found no partition (is partition upkeep running? run cleanup as the outbox's owner)",
      "tm_p: no partition for the current day, fewer than 1 (upkeep keeps 2; has cleanup not run as the outbox's owner for a day?)",
    ])
  })

  it('--metrics-per-schema without --schemas is refused with one line', async () => {
    const result = await runCli(['run', '--handlers', fixturePath('tenant-handler.js'), '--metrics-per-schema'], { DATABASE_URL: db.url })
    expect(result.code).not.toBe(0)
    expect(result.stderr).toMatch(/^outbox-poller: --metrics-per-schema \(OUTBOX_POLLER_METRICS_PER_SCHEMA\) needs --schemas/m)
    const env = await runCli(['run', '--schemas', 'tm_*', '--handlers', fixturePath('tenant-handler.js')], { DATABASE_URL: db.url, OUTBOX_POLLER_METRICS_PER_SCHEMA: 'maybe' })
    expect(env.code).not.toBe(0)
    expect(env.stderr).toMatch(/OUTBOX_POLLER_METRICS_PER_SCHEMA must be true or false \(got "maybe"\)/)
  })
})
