import { randomBytes } from 'node:crypto'
import { context, type Span, SpanStatusCode, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { emit, withEventContext } from '../../src/capture/emit.js'
import { formatTraceparent } from '../../src/poller/traceparent.js'
import type { Handler } from '../../src/types.js'
import { relaySuite, startRelay, testWebhookSecret } from '../support/relay.js'
import { bindQueue, deleteAmqp, deleteNatsStream, deleteRedisStream, drainQueue, readStream, services, startReceiver, withRedis } from '../support/sink-receivers.js'
import { waitFor } from '../support/wait-for.js'

const run = randomBytes(4).toString('hex')
const { db, afterFile } = relaySuite({ items: { columns: 'id int primary key, name text', entity: 'item' } })

const writerTraceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'
const exchange = `outbox-trace-${run}`
const queue = `outbox-trace-${run}-items`
const stream = `OUTBOX_TRACE_${run}`
const redisStream = `outbox-trace-${run}`
let receiver: Awaited<ReturnType<typeof startReceiver>>

beforeAll(async () => {
  await bindQueue(exchange, queue, 'item.*')
  receiver = await startReceiver(testWebhookSecret)
  afterFile(() => deleteAmqp(exchange, [queue]))
  afterFile(() => deleteNatsStream(stream))
  afterFile(() => deleteRedisStream(redisStream))
  afterFile(() => receiver.close())
})

/** Every sink kind at once: AMQP headers, NATS headers, a Redis field, a webhook header. */
const sinkUrls = () => [
  `${services.amqp}/?exchange=${exchange}`,
  `nats://${services.nats}?stream=${stream}&subject=trace${run}&create=1`,
  `${services.redis}?stream=${redisStream}`,
  receiver.url,
]

/** The traceparent each sink sent for each event id, by sink kind. */
async function sentTraceparents(expected: number): Promise<Record<'amqp' | 'nats' | 'redis' | 'webhook', Map<string, unknown>>> {
  const amqp = await drainQueue(queue, expected)
  const nats = await readStream(stream)
  const redis = await withRedis(async (client) => (await client.xRange(redisStream, '-', '+')) ?? [])
  await waitFor('every webhook', () => receiver.deliveries.filter((d) => d.status === 200).length >= expected)
  return {
    amqp: new Map(amqp.map((m) => [m.properties.messageId as string, m.properties.headers?.traceparent])),
    nats: new Map(nats.map((m) => [m.headers!.get('Nats-Msg-Id'), m.headers!.has('traceparent') ? m.headers!.get('traceparent') : undefined])),
    redis: new Map(redis.map((entry) => [entry.message.event_id!, entry.message.traceparent])),
    webhook: new Map(receiver.deliveries.filter((d) => d.status === 200).map((d) => [d.id, d.headers.traceparent])),
  }
}

async function clearBrokers() {
  await drainQueue(queue, 0, 100)
  await deleteNatsStream(stream)
  await withRedis((client) => client.del(redisStream))
  receiver.deliveries.length = 0
}

async function metadataOf(entityId: string) {
  return (await db.sql<{ metadata: Record<string, unknown> }[]>`select metadata from outbox where entity_id = ${entityId}`)[0]!.metadata
}

describe('the writer’s traceparent', () => {
  it('withEventContext, SET LOCAL and emit store it in the metadata; one not of the W3C form is dropped and the write still succeeds', async () => {
    await db.sql.begin(async (tx) => {
      await withEventContext(tx, { traceparent: writerTraceparent, actor: 'user:1' })
      await tx`insert into items values (1, 'a')`
      await emit(tx, { event_type: 'item.noted', entity_type: 'item', entity_id: 'e1' })
    })
    await db.sql.begin(async (tx) => {
      await tx.unsafe(`set local outbox.traceparent = '${writerTraceparent.replace('-01', '-00')}'`)
      await tx`insert into items values (2, 'b')`
    })
    const malformed = ['garbage', 'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', '00-00000000000000000000000000000000-b7ad6b7169203331-01', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra', `${writerTraceparent} `]
    for (const [i, value] of malformed.entries()) {
      await db.sql.begin(async (tx) => {
        await withEventContext(tx, { traceparent: value })
        await tx`insert into items values (${10 + i}, 'bad')`
      })
    }
    expect(await metadataOf('1')).toMatchObject({ traceparent: writerTraceparent, actor: 'user:1' })
    expect(await metadataOf('e1')).toMatchObject({ traceparent: writerTraceparent })
    expect(await metadataOf('2')).toMatchObject({ traceparent: writerTraceparent.replace('-01', '-00') })
    for (const i of malformed.keys()) expect(Object.keys(await metadataOf(String(10 + i)))).toEqual(['txid'])
    // a later version may carry more fields
    await db.sql.begin(async (tx) => {
      await withEventContext(tx, { traceparent: `${writerTraceparent.replace('00-', '01-')}-more` })
      await tx`insert into items values (3, 'c')`
    })
    expect((await metadataOf('3')).traceparent).toBe(`${writerTraceparent.replace('00-', '01-')}-more`)
  })

  it('with no OpenTelemetry SDK registered, every sink sends the stored traceparent, and none for an event without one', async () => {
    expect(trace.getTracer('probe').startSpan('x').isRecording()).toBe(false)
    await db.sql.begin(async (tx) => {
      await withEventContext(tx, { traceparent: writerTraceparent })
      await tx`insert into items values (1, 'traced')`
    })
    await db.sql.begin(async (tx) => {
      // a traceparent inside outbox.metadata is not the writer's trace context unless it has the W3C form
      await withEventContext(tx, { metadata: { traceparent: 'not-a-traceparent' } })
      await tx`insert into items values (2, 'untraced')`
    })
    const [traced, untraced] = (await db.sql<{ event_id: string }[]>`select event_id::text from outbox order by id`).map((row) => row.event_id)
    const relay = await startRelay(db.url, sinkUrls())
    await waitFor('both processed', async () => (await db.sql`select 1 from outbox where processed_at is not null`).length === 2)
    await relay.stop()
    const sent = await sentTraceparents(2)
    for (const [kind, byEvent] of Object.entries(sent)) {
      expect([kind, byEvent.get(traced!)]).toEqual([kind, writerTraceparent])
      expect([kind, byEvent.get(untraced!)]).toEqual([kind, undefined])
      expect([kind, byEvent.size]).toEqual([kind, 2])
    }
    await clearBrokers()
  })
})

describe('with an OpenTelemetry SDK registered', () => {
  const exporter = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
  beforeAll(() => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
    trace.setGlobalTracerProvider(provider)
  })
  afterAll(async () => {
    await provider.shutdown()
    trace.disable()
    context.disable()
  })

  const spans = () => exporter.getFinishedSpans()
  const named = (name: string) => spans().filter((span) => span.name === name)
  const idOf = (span: ReadableSpan | Span) => span.spanContext().spanId

  it('one trace runs from the INSERT to the handler and to each broker message; a handler error is recorded on its span', async () => {
    const writer = trace.getTracer('test-writer').startSpan('POST /items')
    await db.sql.begin(async (tx) => {
      await withEventContext(tx, { traceparent: formatTraceparent(writer.spanContext()) })
      await tx`insert into items values (1, 'traced')`
    })
    writer.end()
    await db.sql`insert into items values (2, 'fails')`
    const [traced, failing] = (await db.sql<{ event_id: string }[]>`select event_id::text from outbox order by id`).map((row) => row.event_id)
    // a per-event handler beside the sinks: it starts a span of its own, and fails for item 2
    const work: Handler = async (event) => {
      const span = trace.getTracer('test-handler').startSpan('handler work')
      span.end()
      if (event.entity_id === '2') throw new Error('refused by the handler')
    }
    const relay = await startRelay(db.url, sinkUrls(), { extra: { 'item.*': work }, poller: { maxAttempts: 2 } })
    await waitFor('item 1 processed, item 2 dead', async () => (await db.sql`select 1 from outbox where processed_at is not null or dead_at is not null`).length === 2)
    await relay.stop()

    const handle = named('outbox.handle item.created')
    const tracedSpan = handle.find((span) => span.attributes['messaging.message.id'] === traced)!
    const writerContext = writer.spanContext()
    expect(tracedSpan.spanContext().traceId).toBe(writerContext.traceId)
    expect(tracedSpan.parentSpanContext?.spanId).toBe(writerContext.spanId)
    expect(tracedSpan.attributes).toMatchObject({
      'messaging.system': 'outbox-poller',
      'messaging.operation.type': 'process',
      'messaging.destination.name': 'public.outbox',
      'outbox.event.type': 'item.created',
      'outbox.attempt': 1,
    })
    expect(tracedSpan.status.code).not.toBe(SpanStatusCode.ERROR)
    // linked to its batch's span
    const batches = named('outbox.batch')
    const batchIds = new Set(batches.map(idOf))
    expect(tracedSpan.links.some((link) => batchIds.has(link.context.spanId))).toBe(true)
    // the handler's own span is a child of the event's span
    const work1 = named('handler work').find((span) => span.parentSpanContext?.spanId === idOf(tracedSpan))
    expect(work1?.spanContext().traceId).toBe(writerContext.traceId)

    // every broker message carries the event span's context: a consumer continues the same trace
    const expected = formatTraceparent(tracedSpan.spanContext())
    const sent = await sentTraceparents(1)
    for (const [kind, byEvent] of Object.entries(sent)) expect([kind, byEvent.get(traced!)]).toEqual([kind, expected])

    // the failing event: one span per attempt, each with the error recorded; no writer context, so a child of its batch
    const failed = handle.filter((span) => span.attributes['messaging.message.id'] === failing).sort((a, b) => Number(a.attributes['outbox.attempt']) - Number(b.attributes['outbox.attempt']))
    expect(failed.map((span) => span.attributes['outbox.attempt'])).toEqual([1, 2])
    for (const span of failed) {
      expect(span.status).toEqual({ code: SpanStatusCode.ERROR, message: 'refused by the handler' })
      expect(span.events.some((event) => event.name === 'exception' && event.attributes?.['exception.message'] === 'refused by the handler')).toBe(true)
      expect(batchIds.has(span.parentSpanContext!.spanId)).toBe(true)
    }
    expect(batches.every((batch) => batch.attributes['messaging.batch.message_count'] !== undefined)).toBe(true)
  })
})
