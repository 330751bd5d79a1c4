import { describe, expect, it } from 'vitest'
import { isConnectionFailure, isNetworkError } from '../../src/errors.js'
import { eventMessageFields, eventMessageJson } from '../../src/sinks/event-message.js'
import { OutageLog } from '../../src/sinks/outage-log.js'
import { Semaphore } from '../../src/sinks/semaphore.js'
import { sinkDefaults, sinkTimeoutMs } from '../../src/sinks/sink.js'
import { sinkErrorMessage } from '../../src/sinks/sink-errors.js'
import type { Logger, OutboxEvent } from '../../src/types.js'

const event = {
  id: '7',
  event_id: '6f1c8f1e-0000-4000-8000-000000000007',
  event_type: 'ledger.adjusted',
  entity_type: 'ledger',
  entity_id: '1',
  payload: undefined,
  payloadText: '{"data": {"amount": 123456789012345678901234567890.12}}',
  metadata: null,
  processed_at: null,
  created_at: new Date('2026-01-01T00:00:00Z'),
  attempt: 3,
} as unknown as OutboxEvent

describe('the message every sink sends', () => {
  it('splices the stored payload text in as is, and leaves out attempt and processed_at', () => {
    const json = eventMessageJson(event)
    expect(json).toBe('{"event_id":"6f1c8f1e-0000-4000-8000-000000000007","event_type":"ledger.adjusted","entity_type":"ledger","entity_id":"1","created_at":"2026-01-01T00:00:00.000Z","payload":{"data": {"amount": 123456789012345678901234567890.12}}}')
    expect(json).not.toMatch(/attempt|processed_at/)
  })

  it('carries metadata after the payload when the event has it', () => {
    const withMetadata = { ...event, metadata: { correlation_id: 'req-42' } }
    expect(eventMessageFields(withMetadata).metadata).toEqual({ correlation_id: 'req-42' })
    expect(eventMessageJson(withMetadata)).toMatch(/,"payload":\{.*\}\},"metadata":\{"correlation_id":"req-42"\}\}$/)
    expect('metadata' in eventMessageFields(event)).toBe(false)
  })
})

describe('sink timeout', () => {
  it('is 80 % of the handler timeout, at most the default and at least 1 ms', () => {
    expect(sinkTimeoutMs(5_000)).toBe(4_000)
    expect(sinkTimeoutMs(60_000)).toBe(sinkDefaults.timeoutMs)
    expect(sinkTimeoutMs(1)).toBe(1)
  })
})

describe('sink errors', () => {
  it('a network failure is recognised through the causes a client library wraps it in', () => {
    const socket = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5672'), { code: 'ECONNREFUSED' })
    expect(isNetworkError(socket)).toBe(true)
    expect(isNetworkError(new Error('publish failed', { cause: new Error('socket', { cause: socket }) }))).toBe(true)
    expect(isNetworkError(Object.assign(new Error('nope'), { code: 'ERR_SOMETHING' }))).toBe(false)
    expect(isNetworkError('ECONNREFUSED')).toBe(false)
  })

  it('the database: connection exceptions, shutdowns, postgres.js codes and the same network codes', () => {
    for (const code of ['08006', '57P01', '57P03', 'CONNECTION_CLOSED', 'ECONNRESET', 'ENETUNREACH']) expect(isConnectionFailure({ code }), code).toBe(true)
    for (const code of ['53300', '42P01', '57014']) expect(isConnectionFailure({ code }), code).toBe(false)
    expect(isConnectionFailure(new Error('no code'))).toBe(false)
  })

  it("a message keeps its cause's words and loses the sink's secrets", () => {
    const error = new Error('cannot connect to amqp://relay:hunter2@mq', { cause: new Error('ACCESS_REFUSED for hunter2') })
    expect(sinkErrorMessage(error, ['hunter2'])).toBe('cannot connect to amqp://relay:***@mq: ACCESS_REFUSED for ***')
    expect(sinkErrorMessage('plain text', [])).toBe('plain text')
  })
})

describe('in-flight slots', () => {
  it('serves waiters in order, and a waiter whose signal aborts leaves the queue', async () => {
    const slots = new Semaphore(1)
    await slots.acquire()
    const order: string[] = []
    const controller = new AbortController()
    const first = slots.acquire().then(() => order.push('first'))
    const aborted = slots.acquire(controller.signal).then(() => order.push('aborted'), () => order.push('left'))
    const second = slots.acquire().then(() => order.push('second'))
    controller.abort()
    await aborted
    slots.release()
    await first
    slots.release()
    await second
    expect(order).toEqual(['left', 'first', 'second'])
  })

  it('a batch takes several slots at once and waits, in turn, until as many are free', async () => {
    const slots = new Semaphore(4)
    await slots.acquire(undefined, 3)
    const order: string[] = []
    const window = slots.acquire(undefined, 3).then(() => order.push('window of 3'))
    const single = slots.acquire().then(() => order.push('single'))
    slots.release(2) // 3 free: the window goes first, the single waits behind it
    await window
    expect(order).toEqual(['window of 3'])
    slots.release(1)
    await single
    expect(order).toEqual(['window of 3', 'single'])
    expect(() => slots.acquire(undefined, 5)).toThrow(RangeError)
  })
})

describe('the outage log', () => {
  function recorded() {
    const lines: string[] = []
    const log = { warn: (fields: { schema?: string }, msg: string) => lines.push(`${msg.split(':')[0]} ${fields.schema ?? '*'}`), info: (fields: { schema?: string }, msg: string) => lines.push(`${msg} ${fields.schema ?? '*'}`) }
    return { lines, outage: new OutageLog(log as unknown as Logger, 'nats://x') }
  }

  it('logs an outage once when it begins and once when it ends, whatever happens in between', () => {
    const { lines, outage } = recorded()
    outage.up()
    outage.down('connection closed')
    outage.down('connection refused')
    expect(outage.isDown).toBe(true)
    outage.up()
    outage.up()
    expect(lines).toEqual(['sink unavailable *', 'sink available again *'])
    expect(outage.isDown).toBe(false)
  })

  it('keeps a tenant route apart from the whole sink and from the other routes', () => {
    const { lines, outage } = recorded()
    outage.down('no JetStream stream answers', 'tenant_b')
    outage.up()
    outage.up('tenant_a')
    expect(outage.isDown).toBe(false)
    outage.down('no JetStream stream answers', 'tenant_b')
    outage.up('tenant_b')
    expect(lines).toEqual(['sink unavailable tenant_b', 'sink available again tenant_b'])
  })
})
