import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { startHoldingProxy } from '../support/holding-proxy.js'
import { pendingEvents, pollerConnections, processSuite } from '../support/process-suite.js'
import { bindQueue, deleteAmqp, deleteRedisStream, drainQueue, queueLength, withRedis } from '../support/sink-receivers.js'
import { waitFor } from '../support/wait-for.js'

const suite = processSuite('overlap-crash')
const { db } = suite
const run = randomBytes(4).toString('hex')

describe('overlapping batches of a sink relay, under the supervisor', () => {
  it("SIGKILL of the worker while batch N's confirms are outstanding and N+1 is claimed and published: nothing is marked processed, both batches' events are charged, every event is relayed after the restart", async () => {
    const stream = `outbox-overlap-crash-${run}`
    const proxy = await startHoldingProxy({ host: '127.0.0.1', port: 6379 })
    const entries = () => withRedis(async (client) => (await client.xRange(stream, '-', '+')) ?? [])
    try {
      const replica = suite.start(['--sink', `redis://${proxy.address}?stream=${stream}&dedupe_ttl=10m`, '--batch-size', '50', '--interval-max', '500ms', '--retry-delay', '20ms', '--retry-delay-max', '100ms'])
      const pid = Number(await waitFor('the worker started', () => /"worker_pid":(\d+),"msg":"worker started"/.exec(replica.output())?.[1], 20_000))
      await waitFor('the poller started', () => replica.output().includes('"msg":"poller started"'), 20_000)
      proxy.hold() // the worker's Redis connection: its scripts run, their replies stay here
      await db.sql`insert into items select n, 'item ' || n from generate_series(1, 150) n`
      // two batches of 50 published, each in its own transaction; a third claim waits for a commit that cannot come
      // sooner than the sink timeout (10 s), after which an unconfirmed batch would be deferred and the next claimed on a new connection
      await waitFor('two batches published', async () => (await entries()).length === 100, 8_000)
      const [{ processed }] = await db.sql<{ processed: number }[]>`select count(*)::int as processed from outbox where processed_at is not null`
      expect(processed).toBe(0)
      const published = new Set((await entries()).map((entry) => entry.message.event_id))
      process.kill(pid, 'SIGKILL')
      await waitFor('the crash charged', () => replica.output().includes('charged the events the dead worker had in flight'), 20_000)
      // the restarted worker connects afresh (the proxy holds only the dead one's connection) and relays everything
      await waitFor('every event processed', async () => (await pendingEvents(db)) === 0, 60_000, 100)
      const rows = await db.sql<{ event_id: string; attempts: number; processed: boolean }[]>`select event_id::text, attempts, processed_at is not null as processed from outbox order by id`
      expect(rows).toHaveLength(150)
      expect(rows.every((row) => row.processed)).toBe(true)
      // the events of both batches in flight were charged once, the others never
      expect(new Set(rows.filter((row) => row.attempts > 0).map((row) => row.event_id))).toEqual(published)
      expect(rows.every((row) => row.attempts <= 1)).toBe(true)
      // at least once, and the stream's dedupe made it once: every event there, none twice
      const relayed = (await entries()).map((entry) => entry.message.event_id)
      expect(relayed).toHaveLength(150)
      expect(new Set(relayed)).toEqual(new Set(rows.map((row) => row.event_id)))
    } finally {
      await proxy.close()
      await deleteRedisStream(stream)
    }
  }, 120_000)

  it("RabbitMQ: SIGKILL of the worker while both batches' confirms are outstanding: nothing is marked processed, both batches' events are charged, every event is relayed after the restart", async () => {
    const exchange = `outbox-overlap-crash-${run}`
    const queue = `${exchange}-all`
    await bindQueue(exchange, queue, '#')
    const proxy = await startHoldingProxy({ host: '127.0.0.1', port: 5672 })
    try {
      const replica = suite.start(['--sink', `amqp://guest:guest@${proxy.address}/?exchange=${exchange}`, '--batch-size', '50', '--interval-max', '500ms', '--retry-delay', '20ms', '--retry-delay-max', '100ms'])
      const pid = Number(await waitFor('the worker started', () => /"worker_pid":(\d+),"msg":"worker started"/.exec(replica.output())?.[1], 20_000))
      await waitFor('the poller started', () => replica.output().includes('"msg":"poller started"'), 20_000)
      proxy.hold() // the worker's connection: its publishes reach the queue, the confirms stay here
      await db.sql`insert into items select n, 'item ' || n from generate_series(1, 150) n`
      await waitFor('two batches published', async () => (await queueLength(queue)) === 100, 8_000)
      const [{ processed }] = await db.sql<{ processed: number }[]>`select count(*)::int as processed from outbox where processed_at is not null`
      expect(processed).toBe(0)
      process.kill(pid, 'SIGKILL')
      await waitFor('the crash charged', () => replica.output().includes('charged the events the dead worker had in flight'), 20_000)
      await waitFor('every event processed', async () => (await pendingEvents(db)) === 0, 60_000, 100)
      const rows = await db.sql<{ event_id: string; attempts: number; processed: boolean }[]>`select event_id::text, attempts, processed_at is not null as processed from outbox order by id`
      expect(rows).toHaveLength(150)
      expect(rows.every((row) => row.processed)).toBe(true)
      // at least once: the 100 unconfirmed messages stay in the queue and were published again after the restart
      const messages = await drainQueue(queue, 250)
      expect(messages).toHaveLength(250)
      const published = messages.slice(0, 100).map((message) => message.properties.messageId as string)
      expect(new Set(messages.map((message) => message.properties.messageId as string))).toEqual(new Set(rows.map((row) => row.event_id)))
      // the events of both batches in flight were charged once, the others never
      expect(new Set(rows.filter((row) => row.attempts > 0).map((row) => row.event_id))).toEqual(new Set(published))
      expect(rows.every((row) => row.attempts <= 1)).toBe(true)
    } finally {
      await proxy.close()
      await deleteAmqp(exchange, [queue])
    }
  }, 120_000)

  it('a relay to Redis holds a second claim connection; --no-overlap or OUTBOX_POLLER_OVERLAP=false keeps to one', async () => {
    const stream = `outbox-overlap-connections-${run}`
    try {
      for (const [args, env, connections] of [[[], {}, 3], [['--no-overlap'], {}, 2], [[], { OUTBOX_POLLER_OVERLAP: 'false' }, 2]] as const) {
        const replica = suite.start(['--sink', `redis://127.0.0.1:6379?stream=${stream}`, '--no-supervise', '--batch-size', '50', ...args], { ...env })
        await waitFor('the poller started', () => replica.output().includes('"msg":"poller started"'), 20_000)
        await db.sql`insert into items select n, 'item ' || n from generate_series(1, 300) n`
        await waitFor('every event processed', async () => (await pendingEvents(db)) === 0, 30_000)
        // its claims (the second connects at its first claim) and LISTEN; the supervisor, not running here, would open one only at a crash
        expect(await pollerConnections(db)).toBe(connections)
        replica.child.kill('SIGTERM')
        expect((await replica.exited).code).toBe(0)
        await waitFor('its connections closed', async () => (await pollerConnections(db)) === 0)
        await db.sql.unsafe('truncate items; truncate outbox')
      }
    } finally {
      await deleteRedisStream(stream)
    }
  }, 120_000)
})
