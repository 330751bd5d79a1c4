import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { startHoldingProxy } from '../support/holding-proxy.js'
import { idleTransactions, pendingEvents, pollerConnections, processSuite } from '../support/process-suite.js'
import { bindQueue, deleteAmqp, drainQueue, queueLength } from '../support/sink-receivers.js'
import { waitFor } from '../support/wait-for.js'

const suite = processSuite('overlap-stop')
const { db } = suite
const run = randomBytes(4).toString('hex')

describe('a stop while two batches of a RabbitMQ relay are in flight', () => {
  it('SIGTERM while both batches await their confirms: both finish and commit, exit 0, no further batch published uncommitted; a restart relays the rest, each event once', async () => {
    const exchange = `outbox-overlap-stop-${run}`
    const queue = `${exchange}-all`
    await bindQueue(exchange, queue, '#')
    const proxy = await startHoldingProxy({ host: '127.0.0.1', port: 5672 })
    try {
      const worker = suite.start(['--sink', `amqp://guest:guest@${proxy.address}/?exchange=${exchange}`, '--no-supervise', '--batch-size', '50'])
      await waitFor('the poller started', () => worker.output().includes('"msg":"poller started"'), 20_000)
      proxy.hold() // the publishes reach the queue, the confirms stay here
      await db.sql`insert into items select n, 'item ' || n from generate_series(1, 150) n`
      await waitFor('two batches published', async () => (await queueLength(queue)) === 100, 8_000)
      worker.child.kill('SIGTERM')
      await waitFor('the stop seen', () => worker.output().includes('stopping: finishing the batch in hand'), 10_000)
      proxy.release()
      expect((await worker.exited).code).toBe(0)
      expect(await idleTransactions(db)).toBe(0)
      let rows = await db.sql<{ event_id: string; attempts: number; processed: boolean }[]>`select event_id::text, attempts, processed_at is not null as processed from outbox order by id`
      expect(rows).toHaveLength(150)
      // both batches in flight committed once their confirms came; nothing was charged, and nothing was claimed after the stop
      expect(rows.filter((row) => row.processed)).toHaveLength(100)
      expect(rows.every((row) => row.attempts === 0)).toBe(true)
      await waitFor('its connections closed', async () => (await pollerConnections(db)) === 0)
      const again = suite.start(['--sink', `amqp://guest:guest@127.0.0.1:5672/?exchange=${exchange}`, '--no-supervise', '--batch-size', '50'])
      await waitFor('every event processed', async () => (await pendingEvents(db)) === 0, 30_000, 100)
      again.child.kill('SIGTERM')
      expect((await again.exited).code).toBe(0)
      rows = await db.sql<{ event_id: string; attempts: number; processed: boolean }[]>`select event_id::text, attempts, processed_at is not null as processed from outbox order by id`
      expect(rows.every((row) => row.processed && row.attempts === 0)).toBe(true)
      // a clean stop leaves nothing published and not committed: each event reached the queue exactly once
      const messages = await drainQueue(queue, 150)
      expect(messages).toHaveLength(150)
      expect(new Set(messages.map((message) => message.properties.messageId as string))).toEqual(new Set(rows.map((row) => row.event_id)))
    } finally {
      await proxy.close()
      await deleteAmqp(exchange, [queue])
    }
  }, 120_000)
})
