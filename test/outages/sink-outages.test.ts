// stops shared services: runs alone
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { promisify } from 'node:util'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { captureTable } from '../../src/capture/capture.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { type Relay, startRelay, stopAllRelays } from '../support/relay.js'
import { bindQueue, deleteAmqp, deleteNatsStream, deleteRedisStream, drainQueue, natsStreamCount, readStream, services, withRedis } from '../support/sink-receivers.js'
import { waitFor } from '../support/wait-for.js'

const run = promisify(execFile)
const id = randomBytes(4).toString('hex')
const before = 2_000
const during = 3_000
let db: TestDatabase

/** What is stopped right now, so afterAll restores it even when a test failed half-way. */
const stopped = { rabbitmq: false, nats: false, redis: false }

/** The command this machine starts NATS with (JetStream, its store in /var/lib/nats-server). */
const natsStart = ['--start', '--oknodo', '--background', '--exec', '/usr/sbin/nats-server', '--', '-a', '127.0.0.1', '-p', '4222', '-js', '-sd', '/var/lib/nats-server', '-l', '/var/log/nats-server.log']

async function stopRabbitmq() {
  stopped.rabbitmq = true
  await run('rabbitmqctl', ['stop_app'])
}
async function startRabbitmq() {
  await run('rabbitmqctl', ['start_app'])
  await run('rabbitmqctl', ['await_startup'])
  stopped.rabbitmq = false
}

/** Stops the NATS server by its pid (only that process), and waits until it is gone. */
async function stopNats() {
  const { stdout } = await run('pidof', ['-s', 'nats-server'])
  const pid = Number(stdout.trim())
  stopped.nats = true
  process.kill(pid, 'SIGTERM')
  await waitFor('nats-server gone', () => !alive(pid), 10_000)
}
async function startNats() {
  await run('start-stop-daemon', natsStart)
  await waitFor('nats-server answering', async () => (await natsStreamCount('none').then(() => true, () => false)), 10_000, 100)
  stopped.nats = false
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table items (id int primary key, name text)`
  await captureTable(db.sql, outboxTable('public', 'outbox'), { table: 'items', entity: 'item' })
})
afterEach(async () => {
  await stopAllRelays()
  await db.sql.unsafe('truncate items; truncate outbox') // the outbox last, on its own: a captured table's TRUNCATE writes its .truncated event
})
afterAll(async () => {
  if (stopped.rabbitmq) await startRabbitmq().catch((error: unknown) => console.error('could not restart RabbitMQ', error))
  if (stopped.nats) await startNats().catch((error: unknown) => console.error('could not restart NATS', error))
  if (stopped.redis) await withRedis((client) => client.sendCommand(['CLIENT', 'UNPAUSE'])).catch(() => {})
  await db.drop()
})

async function insertItems(count: number, from: number) {
  await db.sql`insert into items select n, 'item ' || n from generate_series(${from}::int, ${from + count - 1}::int) n`
}

async function processedIds(): Promise<string[]> {
  return (await db.sql<{ event_id: string }[]>`select event_id::text from outbox where processed_at is not null order by id`).map((row) => row.event_id)
}

async function allEventIds(): Promise<Set<string>> {
  return new Set((await db.sql<{ event_id: string }[]>`select event_id::text from outbox`).map((row) => row.event_id))
}

async function charged(): Promise<number> {
  return (await db.sql<{ n: number }[]>`select count(*)::int as n from outbox where attempts > 0 or last_error is not null or dead_at is not null`)[0]!.n
}

/**
 * The common course of an outage: relay `before` events, take the broker down, add `during` more, show that
 * while it is down nothing more is marked processed (the batches settle with every event deferred), bring
 * it back and wait for everything. Returns the events that were processed while the broker was down.
 */
async function outage(relay: Relay, down: () => Promise<void>, up: () => Promise<void>): Promise<string[]> {
  await insertItems(before, 1)
  await waitFor('the relay under way', async () => (await processedIds()).length >= 300, 20_000, 20)
  await down()
  await waitFor('the outage seen by the sink', () => relay.log.lines.some((line) => line.msg.startsWith('sink unavailable')), 20_000)
  await insertItems(during, before + 1)
  // Once a batch settled with deferred events, whatever was confirmed before the outage is committed.
  await waitFor('events deferred', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is null and retry_at is not null`)[0]!.n > 0, 20_000)
  const processedWhileDown = await processedIds()
  const batches = relay.poller.stats.batches
  await waitFor('another batch deferred', () => relay.poller.stats.batches > batches, 20_000)
  expect(await processedIds()).toEqual(processedWhileDown)
  expect(processedWhileDown.length).toBeLessThan(before + during)
  await up()
  await waitFor('all relayed after the outage', async () => (await processedIds()).length === before + during, 40_000, 100)
  expect(await charged()).toBe(0)
  const outageLines = relay.log.lines.filter((line) => line.msg.startsWith('sink unavailable') || line.msg === 'sink available again').map((line) => line.msg.split(':')[0])
  expect(outageLines).toEqual(['sink unavailable', 'sink available again'])
  return processedWhileDown
}

// One test at a time, in order, whatever the configuration says: each stops a service the others use.
describe('sinks while their broker is down', { concurrent: false, shuffle: false }, () => {
  it('RabbitMQ stopped mid-run: nothing lost, nothing marked processed before its confirm, no attempt charged, logged once', async () => {
    const exchange = `outbox-outage-${id}`
    const queue = `outbox-outage-${id}`
    await bindQueue(exchange, queue, '#')
    try {
      const relay = await startRelay(db.url, [`${services.amqp}/?exchange=${exchange}`], { sink: { timeoutMs: 2_000 }, poller: { batchSize: 100 } })
      const processedWhileDown = await outage(relay, stopRabbitmq, startRabbitmq)
      // At least once: a message whose confirm was lost with the connection may arrive twice, none is missing.
      const ids = new Set((await drainQueue(queue, before + during)).map((message) => message.properties.messageId as string))
      expect(ids).toEqual(await allEventIds())
      expect(processedWhileDown.every((eventId) => ids.has(eventId))).toBe(true)
      expect(JSON.stringify(relay.log.lines)).not.toContain('guest:guest')
    } finally {
      await stopAllRelays()
      if (!stopped.rabbitmq) await deleteAmqp(exchange, [queue]).catch(() => {})
    }
  })

  it('NATS stopped and restarted mid-run: the stream holds every event exactly once, no attempt charged, logged once', async () => {
    const stream = `OUTBOX_OUTAGE_${id}`
    try {
      const relay = await startRelay(db.url, [`nats://${services.nats}?stream=${stream}&subject=outage_${id}&create=1`], { sink: { timeoutMs: 2_000 }, poller: { batchSize: 100 } })
      await outage(relay, stopNats, startNats)
      const messages = await readStream(stream)
      expect(messages).toHaveLength(before + during)
      expect(new Set(messages.map((message) => message.headers?.get('Nats-Msg-Id')))).toEqual(await allEventIds())
    } finally {
      await stopAllRelays()
      if (!stopped.nats) await deleteNatsStream(stream)
    }
  })

  it('Redis paused (CLIENT PAUSE) mid-run: the stream holds every event exactly once, no attempt charged, logged once', async () => {
    const stream = `outbox-outage-${id}`
    try {
      const relay = await startRelay(db.url, [`${services.redis}?stream=${stream}&dedupe_ttl=10m`], { sink: { timeoutMs: 1_000 }, poller: { batchSize: 100 } })
      const pause = async () => {
        stopped.redis = true
        await withRedis((client) => client.sendCommand(['CLIENT', 'PAUSE', '5000', 'ALL']))
      }
      // CLIENT PAUSE ends by itself; "up" waits for it, so the relay recovers on its own.
      const resumed = async () => {
        await waitFor('Redis answering again', () => withRedis(async (client) => (await client.ping()) === 'PONG'), 15_000, 100)
        stopped.redis = false
      }
      await outage(relay, pause, resumed)
      const entries = await withRedis(async (client) => (await client.xRange(stream, '-', '+')) ?? [])
      expect(entries).toHaveLength(before + during)
      expect(new Set(entries.map((entry) => entry.message.event_id))).toEqual(await allEventIds())
    } finally {
      await stopAllRelays()
      await deleteRedisStream(stream).catch(() => {})
    }
  })
})
