import { randomBytes } from 'node:crypto'
import amqp from 'amqplib'
import { describe, expect, it } from 'vitest'
import { startHoldingProxy } from '../support/holding-proxy.js'
import { relaySuite, startRelay } from '../support/relay.js'
import { bindQueue, deleteAmqp, drainQueue, queueLength, services } from '../support/sink-receivers.js'
import { waitFor } from '../support/wait-for.js'

// RabbitMQ relays keep two batches in flight on one connection and one confirm channel: a connection cut, a
// channel error and per-entity ordering, each while both batches are out.
const run = randomBytes(4).toString('hex')
const { db, afterFile } = relaySuite({ items: { columns: 'id int primary key, name text', entity: 'item' } }, { ordering: 'entity' })

interface Row {
  event_id: string
  entity_id: string
  processed: boolean
  attempts: number
  dead: boolean
  deferred: boolean
}

async function outboxRows(): Promise<Row[]> {
  return db.sql<Row[]>`select event_id::text, entity_id, processed_at is not null as processed, attempts, dead_at is not null as dead, retry_at is not null as deferred from outbox order by id`
}

/** Events some transaction holds locked: the claims in flight. */
async function claimedEvents(): Promise<number> {
  return db.sql.begin(async (sql) => {
    const [{ total }] = await sql<{ total: number }[]>`select count(*)::int as total from outbox where processed_at is null`
    const [{ free }] = await sql<{ free: number }[]>`select count(*)::int as free from (select 1 from outbox where processed_at is null for update skip locked) unlocked`
    return total - free
  })
}

async function withAmqpChannel<T>(use: (channel: amqp.Channel) => Promise<T>): Promise<T> {
  const connection = await amqp.connect(services.amqp)
  try {
    return await use(await connection.createChannel())
  } finally {
    await connection.close()
  }
}

async function amqpRoute(name: string) {
  const exchange = `outbox-amqp-overlap-${name}-${run}`
  const queue = `${exchange}-items`
  await bindQueue(exchange, queue, 'item.*')
  afterFile(() => deleteAmqp(exchange, [queue]))
  const proxy = await startHoldingProxy({ host: '127.0.0.1', port: 5672 })
  afterFile(() => proxy.close())
  return { exchange, queue, proxy, url: `amqp://guest:guest@${proxy.address}/?exchange=${exchange}` }
}

const insertEvents = (count: number) =>
  db.sql`insert into outbox (event_type, entity_type, entity_id, payload) select 'item.updated', 'item', n::text, '{}' from generate_series(1, ${count}::int) n`

describe('RabbitMQ, two batches in flight', () => {
  it('nacks among the acks of both batches in flight, on their one channel: each fails only its own event, in whichever batch it is', async () => {
    const { exchange, queue, proxy, url } = await amqpRoute('nack')
    // a queue that takes nothing and refuses what comes (reject-publish): the broker nacks every message routed to it
    const full = `${exchange}-full`
    await withAmqpChannel(async (channel) => {
      await channel.assertQueue(full, { durable: true, arguments: { 'x-max-length': 0, 'x-overflow': 'reject-publish' } })
      await channel.bindQueue(full, exchange, 'full.updated')
    })
    afterFile(() => withAmqpChannel(async (channel) => void (await channel.deleteQueue(full))))
    const relay = await startRelay(db.url, [url], { poller: { ordering: 'entity', batchSize: 10, maxAttempts: 1 } })
    proxy.hold()
    // batch A is entities 1-10, batch B 11-20: three refused in A, two in B
    const refused = ['3', '4', '9', '12', '20']
    await db.sql`insert into outbox (event_type, entity_type, entity_id, payload)
                 select case when n::text = any(${refused}) then 'full.updated' else 'item.updated' end, 'item', n::text, '{}' from generate_series(1, 20) n`
    await waitFor('both batches published', async () => (await queueLength(queue)) === 15 && (await claimedEvents()) === 20, 8_000)
    proxy.release()
    await waitFor('every event settled', async () => (await outboxRows()).every((row) => row.processed || row.dead))
    const rows = await outboxRows()
    expect(rows.filter((row) => row.dead).map((row) => row.entity_id)).toEqual(refused)
    expect(rows.filter((row) => row.dead).every((row) => row.attempts === 1)).toBe(true)
    expect(rows.filter((row) => !row.dead).every((row) => row.processed && row.attempts === 0)).toBe(true)
    await relay.stop()
  })

  it('a connection cut while batch A awaits its confirms and batch B waits to publish: nothing processed, nothing charged, everything relayed once it is back', async () => {
    const { queue, proxy, url } = await amqpRoute('cut')
    // 15 messages in flight at most: A's 10 are out, B's 10 wait for A's slots, claimed and publishing
    const relay = await startRelay(db.url, [url], { sink: { maxInFlight: 15 }, poller: { ordering: 'entity', batchSize: 10, maxAttempts: 1 } })
    proxy.hold()
    await insertEvents(20)
    await waitFor('A published, B claimed', async () => (await queueLength(queue)) === 10 && (await claimedEvents()) === 20, 8_000)
    expect((await outboxRows()).some((row) => row.processed || row.attempts > 0)).toBe(false)
    proxy.cut()
    await waitFor('both batches deferred', async () => (await outboxRows()).filter((row) => row.deferred).length === 20)
    expect((await outboxRows()).every((row) => !row.processed && row.attempts === 0 && !row.dead)).toBe(true)
    proxy.restore()
    await waitFor('every event processed', async () => (await outboxRows()).every((row) => row.processed), 30_000, 100)
    const rows = await outboxRows()
    expect(rows.every((row) => row.attempts === 0 && !row.dead)).toBe(true)
    // A's 10 unconfirmed messages stayed in the queue and went again; B's went once, on the new connection
    const messages = await drainQueue(queue, 30)
    expect(messages).toHaveLength(30)
    expect(new Set(messages.map((message) => message.properties.messageId as string))).toEqual(new Set(rows.map((row) => row.event_id)))
    await relay.stop()
  })

  it('a connection that stalls with both batches awaiting their confirms: both time out uncharged, and are relayed on a new connection', async () => {
    const { queue, proxy, url } = await amqpRoute('stall')
    const relay = await startRelay(db.url, [url], { sink: { timeoutMs: 1_000 }, poller: { ordering: 'entity', batchSize: 10, maxAttempts: 1 } })
    proxy.hold() // never released: the held connection stays open, silent
    await insertEvents(20)
    await waitFor('both batches published', async () => (await queueLength(queue)) === 20 && (await claimedEvents()) === 20, 8_000)
    // the timed-out connection is dropped; the next one, opened after the hold, passes
    await waitFor('every event processed', async () => (await outboxRows()).every((row) => row.processed), 30_000, 100)
    expect((await outboxRows()).every((row) => row.attempts === 0 && !row.dead)).toBe(true)
    expect(relay.log.lines.some((line) => line.msg.startsWith('sink unavailable') && /no confirm within/.test(JSON.stringify(line)))).toBe(true)
    expect(await queueLength(queue)).toBe(40) // each unconfirmed message stayed and went again
    await relay.stop()
  })

  it('an exchange deleted while batch A awaits its confirms and batch B waits to publish: A stays confirmed, B is deferred uncharged, relayed once the exchange is back', async () => {
    const { exchange, queue, proxy, url } = await amqpRoute('channel')
    const relay = await startRelay(db.url, [url], { sink: { maxInFlight: 15 }, poller: { ordering: 'entity', batchSize: 10, maxAttempts: 1 } })
    proxy.hold()
    await insertEvents(20)
    await waitFor('A published, B claimed', async () => (await queueLength(queue)) === 10 && (await claimedEvents()) === 20, 8_000)
    const published = new Set((await drainQueue(queue, 10)).map((message) => message.properties.messageId as string))
    await withAmqpChannel((channel) => channel.deleteExchange(exchange))
    // A's confirms come back; B then publishes to the missing exchange: the broker closes the channel (404)
    proxy.release()
    await waitFor('A processed, B deferred', async () => {
      const rows = await outboxRows()
      return rows.filter((row) => row.processed).length === 10 && rows.filter((row) => row.deferred).length === 10
    })
    let rows = await outboxRows()
    expect(new Set(rows.filter((row) => row.processed).map((row) => row.event_id))).toEqual(published)
    expect(rows.every((row) => row.attempts === 0 && !row.dead)).toBe(true)
    await waitFor('the outage logged', () => relay.log.lines.some((line) => line.msg.startsWith('sink unavailable') && /NOT_FOUND/.test(JSON.stringify(line))))
    await bindQueue(exchange, queue, 'item.*')
    await waitFor('every event processed', async () => (await outboxRows()).every((row) => row.processed), 60_000, 100)
    rows = await outboxRows()
    expect(rows.every((row) => row.attempts === 0 && !row.dead)).toBe(true)
    const later = await drainQueue(queue, 10)
    expect(later).toHaveLength(10)
    expect(new Set(later.map((message) => message.properties.messageId as string))).toEqual(new Set(rows.map((row) => row.event_id).filter((id) => !published.has(id))))
    await relay.stop()
  })

  it('--ordering entity: the two batches in flight hold no entity in common, and each entity reaches the queue in id order', async () => {
    const { queue, proxy, url } = await amqpRoute('order')
    const relay = await startRelay(db.url, [url], { poller: { ordering: 'entity', batchSize: 10 } })
    proxy.hold()
    const entities = 15
    const rounds = 4
    await db.sql`insert into outbox (event_type, entity_type, entity_id, payload)
                 select 'item.updated', 'item', e::text, jsonb_build_object('round', r) from generate_series(1, ${rounds}::int) r, generate_series(1, ${entities}::int) e order by r, e`
    // 15 heads: A takes 10, B the other 5 (a round-2 event waits while its round-1 event is in flight)
    await waitFor('both batches published', async () => (await queueLength(queue)) === entities && (await claimedEvents()) === entities, 8_000)
    proxy.release()
    await waitFor('every event processed', async () => (await outboxRows()).every((row) => row.processed), 30_000, 100)
    const messages = (await drainQueue(queue, entities * rounds)).map((message) => JSON.parse(message.content.toString()) as { entity_id: string; payload: { round: number } })
    expect(messages).toHaveLength(entities * rounds)
    expect(messages.slice(0, entities).every((message) => message.payload.round === 1)).toBe(true)
    for (let entity = 1; entity <= entities; entity++) {
      const own = messages.filter((message) => message.entity_id === String(entity)).map((message) => message.payload.round)
      expect(own).toEqual(Array.from({ length: rounds }, (_, i) => i + 1))
    }
    await relay.stop()
  })
})
