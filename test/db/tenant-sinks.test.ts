import { randomBytes } from 'node:crypto'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { startRelay, stopAllRelays } from '../support/relay.js'
import { createNatsStream, deleteNatsStream, deleteRedisStream, natsStreamCount, readStream, services, withRedis } from '../support/sink-receivers.js'
import { createTenant, writeOrders } from '../support/tenants.js'
import { waitFor } from '../support/wait-for.js'

// {schema} in a sink's subject or stream routes each tenant's events to the tenant's own stream.
const run = randomBytes(4).toString('hex')
let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  for (const schema of ['tenant_s1', 'tenant_s2']) await createTenant(db.sql, schema)
})
afterEach(async () => {
  await stopAllRelays()
  for (const schema of ['tenant_s1', 'tenant_s2']) await db.sql.unsafe(`truncate ${schema}.orders; truncate ${schema}.outbox`) // the outbox last: a TRUNCATE of orders writes its event
})
afterAll(async () => {
  await db.drop()
})

const rows = (schema: string) => db.sql.unsafe<Array<{ processed: boolean; attempts: number; dead: boolean }>>(`select processed_at is not null as processed, attempts, dead_at is not null as dead from ${schema}.outbox`)

describe('sinks with {schema}', () => {
  it('NATS: each tenant\'s events land in its own stream; a tenant whose stream is missing waits, uncharged, logged once, until it exists', async () => {
    const streamOf = (schema: string) => `OUTBOX_T_${run}_${schema}`
    const subjectOf = (schema: string) => `outbox_t_${run}.${schema}`
    await createNatsStream(streamOf('tenant_s1'), [`${subjectOf('tenant_s1')}.>`])
    try {
      await writeOrders(db.sql, 'tenant_s1', 20)
      await writeOrders(db.sql, 'tenant_s2', 5)
      const relay = await startRelay(db.url, [`nats://${services.nats}?stream=OUTBOX_T_${run}_{schema}&subject=outbox_t_${run}.{schema}`], { poller: { schemas: 'tenant_s*' } })
      await waitFor('tenant_s1 delivered', async () => (await rows('tenant_s1')).every((row) => row.processed), 30_000, 100)
      const messages = await readStream(streamOf('tenant_s1'))
      expect(messages).toHaveLength(20)
      expect(new Set(messages.map((message) => message.subject))).toEqual(new Set([`${subjectOf('tenant_s1')}.order.created`]))
      await waitFor('the missing route logged', () => relay.log.lines.some((line) => line.msg.startsWith('sink unavailable')), 10_000)
      expect((await rows('tenant_s2')).every((row) => !row.processed && row.attempts === 0 && !row.dead)).toBe(true)
      // the other tenant's batches get through meanwhile: still one outage, of tenant_s2's route
      for (let round = 0; round < 5; round++) {
        await writeOrders(db.sql, 'tenant_s1', 10, 21 + round * 10)
        await waitFor('tenant_s1 delivered again', async () => (await rows('tenant_s1')).every((row) => row.processed), 30_000, 50)
      }
      const outageLines = () => relay.log.lines.filter((line) => line.msg.startsWith('sink unavailable') || line.msg === 'sink available again').map((line) => `${line.msg.split(':')[0]} ${String(line.schema)}`)
      expect(outageLines()).toEqual(['sink unavailable tenant_s2'])
      await createNatsStream(streamOf('tenant_s2'), [`${subjectOf('tenant_s2')}.>`])
      await waitFor('tenant_s2 delivered once its stream exists', async () => (await rows('tenant_s2')).every((row) => row.processed), 30_000, 100)
      expect(await natsStreamCount(streamOf('tenant_s2'))).toBe(5)
      expect((await rows('tenant_s2')).every((row) => row.attempts === 0)).toBe(true)
      expect(outageLines()).toEqual(['sink unavailable tenant_s2', 'sink available again tenant_s2'])
    } finally {
      await deleteNatsStream(streamOf('tenant_s1'))
      await deleteNatsStream(streamOf('tenant_s2')).catch(() => {})
    }
  })

  it('Redis: each tenant\'s events are added to its own stream', async () => {
    const streamOf = (schema: string) => `outbox-t-${run}:${schema}`
    try {
      await writeOrders(db.sql, 'tenant_s1', 7)
      await writeOrders(db.sql, 'tenant_s2', 3)
      await startRelay(db.url, [`${services.redis}?stream=outbox-t-${run}:{schema}`], { poller: { schemas: ['tenant_s1', 'tenant_s2'] } })
      await waitFor('both delivered', async () => [...(await rows('tenant_s1')), ...(await rows('tenant_s2'))].every((row) => row.processed), 30_000, 100)
      expect(await withRedis((client) => client.xLen(streamOf('tenant_s1')))).toBe(7)
      expect(await withRedis((client) => client.xLen(streamOf('tenant_s2')))).toBe(3)
    } finally {
      for (const schema of ['tenant_s1', 'tenant_s2']) await deleteRedisStream(streamOf(schema))
    }
  })
})
