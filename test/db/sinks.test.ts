import { randomBytes } from 'node:crypto'
import { beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, RetryLaterError } from '../../src/errors.js'
import { webhookConnections } from '../../src/sinks/http-post.js'
import { parseSink } from '../../src/sinks/parse-sink.js'
import { createSinkHandlers } from '../../src/sinks/create-sinks.js'
import type { OutboxEvent } from '../../src/types.js'
import { captureLog, relaySuite, startRelay, testWebhookSecret } from '../support/relay.js'
import {
  bindQueue,
  createNatsStream,
  deleteAmqp,
  deleteNatsStream,
  deleteRedisStream,
  drainQueue,
  natsStreamCount,
  readStream,
  services,
  startReceiver,
  withRedis,
} from '../support/sink-receivers.js'
import { waitFor } from '../support/wait-for.js'

const run = randomBytes(4).toString('hex')
const total = 5_000
const { db, afterFile } = relaySuite({ items: { columns: 'id int primary key, name text', entity: 'item' }, widgets: { columns: 'id int primary key', entity: 'widget' } })

async function insertItems(count: number, from = 1) {
  await db.sql`insert into items select n, 'item ' || n from generate_series(${from}::int, ${from + count - 1}::int) n`
}

async function outboxRows() {
  return db.sql<{ event_id: string; entity_id: string; event_type: string; processed: boolean; attempts: number; dead: boolean; last_error: string | null }[]>`
    select event_id::text, entity_id, event_type, processed_at is not null as processed, attempts, dead_at is not null as dead, last_error from outbox order by id`
}

async function processedCount(): Promise<number> {
  return (await db.sql<{ n: number }[]>`select count(*)::int as n from outbox where processed_at is not null`)[0]!.n
}

/** An event as the poller would hand it over, for calling a sink directly. */
function fakeEvent(eventId: string): OutboxEvent {
  return { id: '1', event_id: eventId, event_type: 'item.created', entity_type: 'item', entity_id: '1', payload: { data: { id: 1 } }, payloadText: '{"data": {"id": 1}}', metadata: null, processed_at: null, created_at: new Date(), attempt: 1 } as OutboxEvent
}

describe('RabbitMQ sink', () => {
  const exchange = `outbox-test-${run}`
  const queue = `outbox-test-${run}-items`
  beforeAll(async () => {
    await bindQueue(exchange, queue, 'item.*')
    afterFile(() => deleteAmqp(exchange, [queue]))
  })

  it('5,000 captured changes arrive exactly once, persistent, with routing key, message id and headers', async () => {
    await insertItems(total)
    const relay = await startRelay(db.url, [`${services.amqp}/?exchange=${exchange}&declare=topic`])
    await waitFor('all processed', async () => (await processedCount()) === total, 40_000, 100)
    const messages = await drainQueue(queue, total)
    const rows = await outboxRows()
    expect(messages).toHaveLength(total)
    expect(new Set(messages.map((m) => m.properties.messageId))).toEqual(new Set(rows.map((row) => row.event_id)))
    const byId = new Map(rows.map((row) => [row.event_id, row]))
    for (const message of messages) {
      const row = byId.get(message.properties.messageId as string)!
      expect(message.fields.routingKey).toBe('item.created')
      expect(message.properties.deliveryMode).toBe(2)
      expect(message.properties.contentType).toBe('application/json')
      expect(message.properties.headers).toMatchObject({ entity_type: 'item', entity_id: row.entity_id, event_type: 'item.created' })
      const body = JSON.parse(message.content.toString())
      expect(body).toMatchObject({ event_id: row.event_id, entity_id: row.entity_id, payload: { data: { id: Number(row.entity_id), name: `item ${row.entity_id}` } } })
    }
    expect(rows.every((row) => row.attempts === 0)).toBe(true)
    expect(JSON.stringify(relay.log.lines)).not.toContain('guest:guest')
  })

  it('an unroutable (returned) message is a failed attempt, dead after --max-attempts; a routable batch-mate is delivered', async () => {
    await db.sql`insert into widgets values (1)`
    await insertItems(1)
    await startRelay(db.url, [`${services.amqp}/?exchange=${exchange}`], { poller: { maxAttempts: 2 } })
    await waitFor('the widget dead', async () => (await outboxRows()).find((row) => row.event_type === 'widget.created')?.dead)
    const rows = await outboxRows()
    expect(rows.find((row) => row.event_type === 'widget.created')).toMatchObject({ processed: false, attempts: 2 })
    expect(rows.find((row) => row.event_type === 'widget.created')!.last_error).toMatch(/^amqp:\/\/guest:\*\*\*@127\.0\.0\.1:5672\/\?exchange=.*: unroutable: returned 312 NO_ROUTE/)
    expect(rows.find((row) => row.event_type === 'item.created')).toMatchObject({ processed: true, attempts: 0 })
    expect(await drainQueue(queue, 1)).toHaveLength(1)
  })

  it("the event's metadata travels as a header and in the body", async () => {
    const { sinks, close } = await createSinkHandlers([parseSink(`${services.amqp}/?exchange=${exchange}`)], { log: captureLog().logger })
    try {
      const event = { ...fakeEvent('6f1c8f1e-0000-4000-8000-000000000004'), metadata: { correlation_id: 'req-42', actor: 'alice' } }
      await sinks[0]!.publish(event)
      const [message] = await drainQueue(queue, 1)
      expect(message!.properties.headers!.metadata).toEqual({ correlation_id: 'req-42', actor: 'alice' })
      expect(JSON.parse(message!.content.toString()).metadata).toEqual({ correlation_id: 'req-42', actor: 'alice' })
    } finally {
      await close()
    }
  })

  it('a missing exchange (without ?declare) stops start-up with a ConfigError', async () => {
    const specs = [parseSink(`${services.amqp}/?exchange=no-such-exchange-${run}`)]
    await expect(createSinkHandlers(specs, { log: captureLog().logger })).rejects.toThrow(/exchange "no-such-exchange-.*" does not exist/)
    await expect(createSinkHandlers([parseSink(`amqp://guest:wrong@127.0.0.1:5672/?exchange=${exchange}`)], { log: captureLog().logger })).rejects.toBeInstanceOf(ConfigError)
  })
})

describe('NATS JetStream sink', () => {
  const stream = `OUTBOX_TEST_${run}`
  const subject = `outbox_test_${run}`
  const url = `nats://${services.nats}?stream=${stream}&subject=${subject}&create=1`
  beforeAll(() => afterFile(() => deleteNatsStream(stream)))

  it('5,000 captured changes are stored exactly once on <subject>.<event_type> with Nats-Msg-Id = event_id', async () => {
    await insertItems(total)
    await startRelay(db.url, [url])
    await waitFor('all processed', async () => (await processedCount()) === total, 40_000, 100)
    const messages = await readStream(stream)
    const rows = await outboxRows()
    expect(messages).toHaveLength(total)
    expect(new Set(messages.map((m) => m.headers?.get('Nats-Msg-Id')))).toEqual(new Set(rows.map((row) => row.event_id)))
    for (const message of messages) {
      expect(message.subject).toBe(`${subject}.item.created`)
      const body = message.json<{ event_id: string; entity_type: string }>()
      expect(body.event_id).toBe(message.headers?.get('Nats-Msg-Id'))
      expect(message.headers?.get('Outbox-Entity-Type')).toBe('item')
    }
  })

  it('a crash between publish and commit re-publishes the batch, and the stream stores it once', async () => {
    const before = await natsStreamCount(stream)
    await insertItems(200, 10_001)
    const crashing = await crashAfterPublishing([url], async () => (await natsStreamCount(stream)) - before >= 200)
    expect(await natsStreamCount(stream)).toBe(before + 200)
    await startRelay(db.url, [url])
    await waitFor('all processed by the second poller', async () => (await processedCount()) === 200)
    expect(await natsStreamCount(stream)).toBe(before + 200)
    expect(crashing.every((row) => !row.processed && row.attempts === 0)).toBe(true)
  })

  it('a message the stream refuses fails only its own event; its batch-mates are stored and processed', async () => {
    const small = `${stream}_SMALL`
    await createNatsStream(small, [`${subject}_small.>`], { max_msg_size: 1024 })
    afterFile(() => deleteNatsStream(small))
    // one batch of 20 (the relay starts after they are written), one of them too big for the stream
    await db.sql`insert into items select n, case when n = 7 then repeat('x', 2000) else 'item ' || n end from generate_series(1, 20) n`
    await startRelay(db.url, [`nats://${services.nats}?stream=${small}&subject=${subject}_small`], { poller: { maxAttempts: 1 } })
    await waitFor('the big one dead, the others processed', async () => (await outboxRows()).every((row) => row.processed || row.dead))
    const rows = await outboxRows()
    expect(rows.find((row) => row.entity_id === '7')).toMatchObject({ processed: false, dead: true, attempts: 1, last_error: expect.stringMatching(/maximum/i) })
    expect(rows.filter((row) => row.entity_id !== '7').every((row) => row.processed && row.attempts === 0)).toBe(true)
    expect(await natsStreamCount(small)).toBe(19)
  })

  it('a stream that does not exist (without ?create=1) stops start-up with a ConfigError', async () => {
    const specs = [parseSink(`nats://${services.nats}?stream=NO_SUCH_${run}`)]
    await expect(createSinkHandlers(specs, { log: captureLog().logger })).rejects.toThrow(/stream "NO_SUCH_.*" does not exist/)
  })
})

describe('Redis Streams sink', () => {
  const stream = `outbox-test-${run}`
  const url = `${services.redis}?stream=${stream}&dedupe_ttl=10m`
  beforeAll(() => afterFile(() => deleteRedisStream(stream)))

  it('5,000 captured changes are added exactly once, with the event fields', async () => {
    await insertItems(total)
    await startRelay(db.url, [url])
    await waitFor('all processed', async () => (await processedCount()) === total, 40_000, 100)
    const entries = await withRedis(async (client) => (await client.xRange(stream, '-', '+')) ?? [])
    const rows = await outboxRows()
    expect(entries).toHaveLength(total)
    expect(new Set(entries.map((entry) => entry.message.event_id))).toEqual(new Set(rows.map((row) => row.event_id)))
    const byId = new Map(rows.map((row) => [row.event_id, row]))
    for (const { message } of entries) {
      const row = byId.get(message.event_id!)!
      expect(message).toMatchObject({ event_type: 'item.created', entity_type: 'item', entity_id: row.entity_id })
      expect(JSON.parse(message.payload!)).toEqual({ data: { id: Number(row.entity_id), name: `item ${row.entity_id}` } })
      expect(new Date(message.created_at!).toISOString()).toBe(message.created_at)
    }
  })

  it('a crash between publish and commit re-publishes the batch, and the stream holds it once', async () => {
    const length = () => withRedis((client) => client.xLen(stream))
    const before = await length()
    await insertItems(200, 10_001)
    await crashAfterPublishing([url], async () => (await length()) - before >= 200)
    await startRelay(db.url, [url])
    await waitFor('all processed by the second poller', async () => (await processedCount()) === 200)
    expect(await length()).toBe(before + 200)
  })

  it("an XADD the server refuses fails each event with the server's words, and its id is not remembered", async () => {
    const wrong = `${stream}-wrongtype`
    afterFile(() => deleteRedisStream(wrong))
    await withRedis((client) => client.set(wrong, 'not a stream'))
    await insertItems(5)
    await startRelay(db.url, [`${services.redis}?stream=${wrong}`], { poller: { maxAttempts: 1 } })
    await waitFor('all dead', async () => (await outboxRows()).every((row) => row.dead))
    expect((await outboxRows()).every((row) => row.attempts === 1 && /WRONGTYPE/.test(row.last_error ?? ''))).toBe(true)
    // a later delivery, once the key is a stream, must not be taken for a duplicate
    expect(await withRedis((client) => client.keys(`outbox-poller:dedupe:${wrong}:*`))).toEqual([])
  })

  it('?maxlen trims the stream approximately', async () => {
    const trimmed = `${stream}-trimmed`
    afterFile(() => deleteRedisStream(trimmed))
    await insertItems(1000)
    await startRelay(db.url, [`${services.redis}?stream=${trimmed}&maxlen=100&dedupe_ttl=10m`])
    await waitFor('all processed', async () => (await processedCount()) === 1000)
    const length = await withRedis((client) => client.xLen(trimmed))
    expect(length).toBeGreaterThanOrEqual(100)
    expect(length).toBeLessThan(400)
  })
})

describe('webhook sink', () => {
  it('5,000 captured changes are POSTed once each, signed, on at most 64 keep-alive connections, and the receiver verifies every signature', async () => {
    const receiver = await startReceiver(testWebhookSecret)
    afterFile(receiver.close)
    await insertItems(total)
    await startRelay(db.url, [`item.*=${receiver.url}`])
    await waitFor('all processed', async () => (await processedCount()) === total, 40_000, 100)
    const rows = await outboxRows()
    expect(receiver.deliveries).toHaveLength(total)
    expect(receiver.deliveries.every((d) => d.signatureValid && d.status === 200)).toBe(true)
    expect(new Set(receiver.deliveries.map((d) => d.id))).toEqual(new Set(rows.map((row) => row.event_id)))
    // a batch's requests go out together, sharing the connections: neither one at a time nor one connection each
    expect(receiver.mostConnections).toBeGreaterThan(1)
    expect(receiver.mostConnections).toBeLessThanOrEqual(webhookConnections)
    for (const delivery of receiver.deliveries.slice(0, 50)) {
      expect(delivery.body).toMatchObject({ event_id: delivery.id, event_type: 'item.created', entity_type: 'item' })
      expect(delivery.headers['content-type']).toBe('application/json')
      expect(Math.abs(Number(delivery.timestamp) - Date.now() / 1000)).toBeLessThan(120)
    }
  })

  it('no event of a batch is marked processed before every confirm of the batch came back', async () => {
    let release!: () => void
    const held = new Promise<void>((resolve) => (release = resolve))
    const receiver = await startReceiver(testWebhookSecret, async (delivery) => {
      if (delivery.body.entity_id === '7') await held
      return { status: 200 }
    })
    afterFile(receiver.close)
    await insertItems(20) // one batch: the relay starts after they are written
    await startRelay(db.url, [receiver.url])
    await waitFor('19 of 20 confirmed', () => receiver.deliveries.length === 19)
    expect(await processedCount()).toBe(0)
    release()
    await waitFor('all processed', async () => (await processedCount()) === 20)
    expect((await outboxRows()).every((row) => row.attempts === 0)).toBe(true)
    expect(receiver.deliveries).toHaveLength(20)
  })

  it('a status refusing one event of a batch fails only that event', async () => {
    const receiver = await startReceiver(testWebhookSecret, (delivery) => ({ status: delivery.body.entity_id === '3' ? 422 : 200 }))
    afterFile(receiver.close)
    await insertItems(10)
    await startRelay(db.url, [receiver.url], { poller: { maxAttempts: 1 } })
    await waitFor('settled', async () => (await outboxRows()).every((row) => row.processed || row.dead))
    const rows = await outboxRows()
    expect(rows.find((row) => row.entity_id === '3')).toMatchObject({ dead: true, attempts: 1, last_error: expect.stringContaining('HTTP 422') })
    expect(rows.filter((row) => row.entity_id !== '3').every((row) => row.processed && row.attempts === 0)).toBe(true)
    expect(receiver.deliveries).toHaveLength(10)
  })

  it('a handler beside the sink fails only its own event, which the sink still delivered', async () => {
    const receiver = await startReceiver(testWebhookSecret)
    afterFile(receiver.close)
    await insertItems(10)
    const extra = (event: OutboxEvent) => {
      if (event.entity_id === '5') throw new Error('the handler refused item 5')
    }
    await startRelay(db.url, [receiver.url], { poller: { maxAttempts: 1 }, extra: { 'item.*': extra } })
    await waitFor('settled', async () => (await outboxRows()).every((row) => row.processed || row.dead))
    const rows = await outboxRows()
    expect(rows.find((row) => row.entity_id === '5')).toMatchObject({ dead: true, attempts: 1, last_error: 'the handler refused item 5' })
    expect(rows.filter((row) => row.entity_id !== '5').every((row) => row.processed)).toBe(true)
    expect(new Set(receiver.deliveries.map((d) => d.body.entity_id))).toHaveLength(10)
  })

  it('500 then 200: the event is retried and delivered, with one attempt charged', async () => {
    const receiver = await startReceiver(testWebhookSecret, (_delivery, seen) => ({ status: seen === 1 ? 500 : 200 }))
    afterFile(receiver.close)
    await insertItems(3)
    await startRelay(db.url, [receiver.url])
    await waitFor('all processed', async () => (await processedCount()) === 3)
    const rows = await outboxRows()
    expect(rows.every((row) => row.attempts === 1 && row.last_error?.endsWith('HTTP 500 Internal Server Error: refused with 500'))).toBe(true)
    expect(receiver.deliveries.map((d) => d.status).sort()).toEqual([200, 200, 200, 500, 500, 500])
  })

  it('400: a failed attempt each time, dead after --max-attempts', async () => {
    const receiver = await startReceiver(testWebhookSecret, () => ({ status: 400 }))
    afterFile(receiver.close)
    await insertItems(1)
    await startRelay(db.url, [receiver.url], { poller: { maxAttempts: 3 } })
    await waitFor('dead', async () => (await outboxRows())[0]?.dead)
    expect((await outboxRows())[0]).toMatchObject({ processed: false, attempts: 3, last_error: expect.stringContaining('HTTP 400 Bad Request') })
    expect(receiver.deliveries).toHaveLength(3)
  })

  it('Retry-After on a 503 pauses the whole sink: batch-mates wait with no attempt charged', async () => {
    const receiver = await startReceiver(testWebhookSecret, (_delivery, seen) => (seen === 1 && _delivery.body.entity_id === '1' ? { status: 503, headers: { 'retry-after': '2' } } : { status: 200 }))
    afterFile(receiver.close)
    await insertItems(1)
    const relay = await startRelay(db.url, [receiver.url], { poller: { concurrency: 1 } })
    await waitFor('the 503', () => receiver.deliveries.length >= 1)
    await insertItems(20, 2)
    await waitFor('all processed', async () => (await processedCount()) === 21, 20_000)
    const [refused, ...rest] = receiver.deliveries
    expect(refused!.status).toBe(503)
    expect(rest[0]!.at - refused!.at).toBeGreaterThanOrEqual(1_900)
    const rows = await outboxRows()
    expect(rows.find((row) => row.entity_id === '1')).toMatchObject({ attempts: 1, last_error: expect.stringContaining('HTTP 503') })
    expect(rows.filter((row) => row.entity_id !== '1').every((row) => row.attempts === 0)).toBe(true)
    expect(relay.log.lines.filter((line) => line.msg.startsWith('sink unavailable'))).toHaveLength(1)
  })

  it('a wrong secret fails verification in the receiver (401, a failed attempt)', async () => {
    const receiver = await startReceiver('whsec_c29tZXRoaW5nLWVsc2UtZW50aXJlbHktMTIzNDU2')
    afterFile(receiver.close)
    const { sinks, close } = await createSinkHandlers([parseSink(receiver.url)], { log: captureLog().logger, secret: testWebhookSecret })
    try {
      await expect(sinks[0]!.publish(fakeEvent('6f1c8f1e-0000-4000-8000-000000000001'))).rejects.toThrow(/HTTP 401 Unauthorized/)
      expect(receiver.deliveries[0]).toMatchObject({ signatureValid: false, status: 401 })
    } finally {
      await close()
    }
  })

  it('an unreachable endpoint charges nothing: events wait, the outage is logged once, then they are delivered', async () => {
    const receiver = await startReceiver(testWebhookSecret)
    const url = receiver.url
    await receiver.close() // the port is now closed: connection refused
    await insertItems(50)
    const relay = await startRelay(db.url, [url])
    await waitFor('events deferred', async () => (await db.sql`select count(*)::int as n from outbox where retry_at is not null`)[0]!.n > 0)
    expect(await processedCount()).toBe(0)
    const port = Number(new URL(url).port)
    const revived = await startReceiverOn(port)
    afterFile(revived.close)
    await waitFor('all processed', async () => (await processedCount()) === 50, 40_000, 100)
    expect((await outboxRows()).every((row) => row.attempts === 0 && row.last_error === null)).toBe(true)
    const outage = relay.log.lines.filter((line) => line.msg.startsWith('sink unavailable') || line.msg === 'sink available again')
    expect(outage.map((line) => line.msg.split(':')[0])).toEqual(['sink unavailable', 'sink available again'])
  })

  it('user:password in the URL is sent as Basic auth and masked in the sink name', async () => {
    const receiver = await startReceiver(testWebhookSecret)
    afterFile(receiver.close)
    const url = receiver.url.replace('http://', 'http://hook:pw%40123@')
    const { sinks, close } = await createSinkHandlers([parseSink(url)], { log: captureLog().logger, secret: testWebhookSecret })
    try {
      await sinks[0]!.publish(fakeEvent('6f1c8f1e-0000-4000-8000-000000000003'))
      expect(receiver.deliveries[0]!.headers.authorization).toBe(`Basic ${Buffer.from('hook:pw@123').toString('base64')}`)
      expect(sinks[0]!.name).toBe(url.replace('pw%40123', '***'))
    } finally {
      await close()
    }
  })

  it('a webhook sink without a secret is a ConfigError', async () => {
    await expect(createSinkHandlers([parseSink('https://hooks.test/x')], { log: captureLog().logger })).rejects.toThrow(/needs a signing secret/)
  })
})

describe('several sinks', () => {
  it('two sinks on one pattern both get every event before it counts as processed', async () => {
    const stream = `outbox-test-${run}-pair`
    afterFile(() => deleteRedisStream(stream))
    const receiver = await startReceiver(testWebhookSecret)
    afterFile(receiver.close)
    await insertItems(100)
    const relay = await startRelay(db.url, [`item.*=${receiver.url}`, `item.*=${services.redis}?stream=${stream}&dedupe_ttl=10m`])
    expect(Object.keys(relay.sinks.handlers)).toEqual(['item.*'])
    await waitFor('all processed', async () => (await processedCount()) === 100)
    expect(new Set(receiver.deliveries.map((d) => d.id)).size).toBe(100)
    expect(await withRedis((client) => client.xLen(stream))).toBe(100)
  })

  it('brokers down at start-up do not stop it: their events are deferred at once, each outage logged once', async () => {
    const log = captureLog()
    const closed = ['amqp://guest:guest@127.0.0.1:1/?exchange=x', 'nats://127.0.0.1:1?stream=S', 'redis://127.0.0.1:1?stream=s']
    const handlers = await createSinkHandlers(closed.map((url) => parseSink(url)), { log: log.logger })
    try {
      for (const sink of handlers.sinks) {
        for (let i = 0; i < 3; i++) {
          const startedAt = Date.now()
          await expect(sink.publish(fakeEvent('6f1c8f1e-0000-4000-8000-000000000005'))).rejects.toBeInstanceOf(RetryLaterError)
          expect(Date.now() - startedAt).toBeLessThan(100) // fails fast: no connection attempt per event
        }
      }
      const warnings = log.lines.filter((line) => line.msg.startsWith('sink unavailable'))
      expect(warnings.map((line) => line.sink).sort()).toEqual(['amqp://guest:***@127.0.0.1:1/?exchange=x', 'nats://127.0.0.1:1?stream=S', 'redis://127.0.0.1:1?stream=s'])
    } finally {
      await handlers.close()
    }
  })

  it('one down and one rejecting: the rejection is charged; both down: nothing is', async () => {
    const receiver = await startReceiver(testWebhookSecret, () => ({ status: 422 }))
    afterFile(receiver.close)
    const unreachable = 'http://127.0.0.1:9/unreachable'
    const handlers = await createSinkHandlers([parseSink(receiver.url), parseSink(unreachable)], { log: captureLog().logger, secret: testWebhookSecret })
    const ctx = { signal: new AbortController().signal, log: captureLog().logger } as never
    try {
      const error = await Promise.resolve(handlers.handlers['*']!(fakeEvent('6f1c8f1e-0000-4000-8000-000000000002'), ctx)).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(Error)
      expect(error).not.toBeInstanceOf(RetryLaterError)
      expect((error as Error).message).toMatch(/HTTP 422.*; http:\/\/127\.0\.0\.1:9\/unreachable is unavailable/)
    } finally {
      await handlers.close()
    }
    const bothDown = await createSinkHandlers([parseSink(unreachable), parseSink('http://127.0.0.1:9/also-unreachable')], { log: captureLog().logger, secret: testWebhookSecret })
    try {
      const error = await Promise.resolve(bothDown.handlers['*']!(fakeEvent('6f1c8f1e-0000-4000-8000-000000000006'), ctx)).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(RetryLaterError) // deferred: no attempt charged
      expect((error as Error).message).toMatch(/unreachable is unavailable.*; .*also-unreachable is unavailable/)
    } finally {
      await bothDown.close()
    }
  })
})

/**
 * Relays with a second handler that never returns, so the sinks have published the batch but it is never
 * committed; then a forced stop rolls it back, as a crash would. Returns the rows after the rollback.
 */
async function crashAfterPublishing(urls: string[], published: () => Promise<boolean>) {
  const relay = await startRelay(db.url, urls, {
    // Every event of the batch at once: each one's sinks publish, then the blocker holds it uncommitted.
    poller: { batchSize: 500, concurrency: 500 },
    extra: { 'item.*': (_event, ctx) => new Promise<void>((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))) },
  })
  await waitFor('the batch published', published)
  await relay.stop({ force: true })
  return outboxRows()
}

/** A receiver on a given port (the one an earlier receiver had). */
async function startReceiverOn(port: number) {
  const { createServer } = await import('node:http')
  const server = createServer((request, response) => {
    request.resume()
    request.on('end', () => response.writeHead(200).end('ok'))
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  return { close: () => new Promise<void>((resolve) => server.close(() => resolve()) && server.closeAllConnections()) }
}
