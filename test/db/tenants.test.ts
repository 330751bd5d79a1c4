import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createPoller, type Poller } from '../../src/poller/poller.js'
import type { OutboxEvent } from '../../src/types.js'
import { captureLogger } from '../support/capture-logger.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
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
})
