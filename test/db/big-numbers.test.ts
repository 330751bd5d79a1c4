import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { emit } from '../../src/capture/emit.js'
import { hasLongNumber, parseLosslessJson } from '../../src/poller/lossless-json.js'
import type { OutboxEvent } from '../../src/types.js'
import { relaySuite, startRelay, testWebhookSecret } from '../support/relay.js'
import { bindQueue, deleteAmqp, deleteNatsStream, deleteRedisStream, drainQueue, readStream, services, startReceiver, withRedis } from '../support/sink-receivers.js'
import { waitFor } from '../support/wait-for.js'

const run = randomBytes(4).toString('hex')
const amount = '123456789012345678901234567890.1234567891'
const big = '9007199254740993'
const { db, afterFile } = relaySuite({ ledger: { columns: 'id int primary key, amount numeric, big bigint, price numeric(10, 2), small int', entity: 'ledger' } })

const allProcessed = async () => (await db.sql`select count(*)::int as n from outbox where processed_at is null`)[0]!.n === 0

describe('numbers a double cannot hold', () => {
  it('a handler gets a captured numeric as its exact text and a bigint beyond 2^53 as a BigInt; plain numbers stay numbers', async () => {
    const seen: OutboxEvent[] = []
    await startRelay(db.url, [], { extra: { 'ledger.*': (event) => void seen.push(event) } })
    await db.sql`insert into ledger values (1, ${amount}::numeric, ${big}::bigint, 1.50, 7)`
    await waitFor('handled', () => seen.length === 1)
    expect((seen[0]!.payload as { data: unknown }).data).toEqual({ id: 1, amount, big: 9007199254740993n, price: 1.5, small: 7 })
    expect(seen[0]!.payloadText).toContain(`"amount": ${amount}`)
    expect(JSON.stringify(seen[0])).toContain(`"big":${big}`) // the event serializes without throwing or rounding
  })

  it('the webhook, RabbitMQ, NATS and Redis sinks relay the stored payload byte for byte', async () => {
    const receiver = await startReceiver(testWebhookSecret)
    afterFile(() => receiver.close())
    const exchange = `outbox-big-${run}`
    const queue = `outbox-big-${run}-ledger`
    await bindQueue(exchange, queue, 'ledger.*')
    afterFile(() => deleteAmqp(exchange, [queue]))
    const nats = `OUTBOX_BIG_${run}`
    afterFile(() => deleteNatsStream(nats))
    const redis = `outbox-big-${run}`
    afterFile(() => deleteRedisStream(redis))
    await startRelay(db.url, [
      receiver.url,
      `${services.amqp}/?exchange=${exchange}`,
      `nats://${services.nats}?stream=${nats}&subject=big_${run}&create=1`,
      `${services.redis}?stream=${redis}&dedupe_ttl=10m`,
    ])
    await db.sql`insert into ledger values (1, ${amount}::numeric, ${big}::bigint, 1.50, 7)`
    await waitFor('relayed', allProcessed)
    const [{ stored }] = await db.sql<{ stored: string }[]>`select payload::text as stored from outbox`
    expect(stored).toContain(amount)
    expect(stored).toContain(big)
    expect(receiver.deliveries).toHaveLength(1)
    expect(receiver.deliveries[0]!.text).toContain(`,"payload":${stored}`)
    const [message] = await drainQueue(queue, 1)
    expect(message!.content.toString()).toContain(`,"payload":${stored}`)
    const [natsMessage] = await readStream(nats)
    expect(natsMessage!.string()).toContain(`,"payload":${stored}`)
    const entries = await withRedis(async (client) => (await client.xRange(redis, '-', '+')) ?? [])
    expect(entries.map((entry) => entry.message.payload)).toEqual([stored])
  })

  it('emit() writes a BigInt in a payload with all its digits, and the handler gets it back as a BigInt', async () => {
    const seen: OutboxEvent[] = []
    await startRelay(db.url, [], { extra: { 'ledger.*': (event) => void seen.push(event) } })
    await db.sql.begin((tx) => emit(tx, { event_type: 'ledger.adjusted', entity_type: 'ledger', entity_id: '1', payload: { delta: 9007199254740993n, note: 'x' }, metadata: { batch: 2n ** 64n } }))
    await waitFor('handled', () => seen.length === 1)
    expect(seen[0]!.payload).toEqual({ delta: 9007199254740993n, note: 'x' })
    const [{ metadata }] = await db.sql<{ metadata: string }[]>`select metadata::text from outbox`
    expect(metadata).toContain('"batch": 18446744073709551616')
  })
})

describe('lossless parse', () => {
  it('keeps every number a double holds as a number and takes plain JSON.parse without a 16-character run of digits', () => {
    expect(parseLosslessJson('{"a": 0.1, "b": 1.50, "c": -12, "d": 9007199254740991, "e": 1e-7, "s": "12345678901234567890"}')).toEqual({ a: 0.1, b: 1.5, c: -12, d: 9007199254740991, e: 1e-7, s: '12345678901234567890' })
    expect(parseLosslessJson('[-9007199254740993, 1234567890.123456789, 100000000000000000000]')).toEqual([-9007199254740993n, '1234567890.123456789', 100000000000000000000n])
    expect(hasLongNumber('{"at": "2026-12-01T21:03:23.123456+00:00", "n": 123456789012345}')).toBe(false)
    expect(hasLongNumber('{"n": 1234567890123456}')).toBe(true)
    expect(hasLongNumber('{"n": 12345678901234.5}')).toBe(true)
  })
})
