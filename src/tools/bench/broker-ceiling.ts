import { randomBytes } from 'node:crypto'
import { Agent, request } from 'node:http'
import type { SinkSpec } from '../../sinks/parse-sink.js'

/** Publishes in flight at once: enough that a broker's confirm latency does not bound the ceiling. */
export const ceilingWindow = 1000
/**
 * Webhook requests in flight, each on a keep-alive connection of its own: more connections only slow a
 * local `node:http` receiver down (1,000 ran at a fraction of the rate of 64 on this host).
 */
export const webhookCeilingConnections = 64

/** An event-sized message body, the same for every broker. */
const body = JSON.stringify({
  event_id: '00000000-0000-0000-0000-000000000000',
  event_type: 'order.created',
  entity_type: 'order',
  entity_id: '1',
  created_at: new Date().toISOString(),
  payload: { orderId: 'ord_1', customerId: 'cus_1', amountCents: 700, currency: 'EUR', items: [{ sku: 'SKU-1', qty: 1 }], note: 'x'.repeat(60) },
})

/**
 * What the sink's broker allows on this host, with no database and nothing of ours in the way: `count`
 * confirmed publishes of an event-sized body, `ceilingWindow` in flight, straight through its client
 * library (Redis `XADD`; a JetStream publish and its ack; a persistent, mandatory publish on an AMQP confirm
 * channel; a webhook: `node:http` POSTs on `webhookCeilingConnections` keep-alive connections, as many in
 * flight). Messages per second. It works on scratch objects of
 * its own (a stream, an exchange and its queue) and removes them.
 */
export async function brokerCeiling(spec: SinkSpec, count: number): Promise<number> {
  const scratch = `outbox_poller_ceiling_${randomBytes(4).toString('hex')}`
  switch (spec.kind) {
    case 'redis': {
      const { createClient } = await import('@redis/client')
      const client = createClient({ url: spec.connectUrl })
      await client.connect()
      try {
        return await windowed(count, (i) => client.xAdd(scratch, '*', { event_id: String(i), payload: body }))
      } finally {
        await client.del(scratch)
        await client.close()
      }
    }
    case 'nats': {
      const { connect } = await import('@nats-io/transport-node')
      const { jetstream, jetstreamManager } = await import('@nats-io/jetstream')
      const connection = await connect({ servers: spec.server, user: spec.user, pass: spec.pass, token: spec.token })
      const manager = await jetstreamManager(connection)
      const stream = scratch.toUpperCase()
      await manager.streams.add({ name: stream, subjects: [`${scratch}.>`] })
      try {
        const js = jetstream(connection)
        const message = new TextEncoder().encode(body)
        return await windowed(count, (i) => js.publish(`${scratch}.order.created`, message, { msgID: `m${i}` }))
      } finally {
        await manager.streams.delete(stream)
        await connection.close()
      }
    }
    case 'amqp': {
      const amqp = (await import('amqplib')).default
      const connection = await amqp.connect(spec.connectUrl)
      try {
        const channel = await connection.createConfirmChannel()
        await channel.assertExchange(scratch, 'topic', { durable: false, autoDelete: false })
        await channel.assertQueue(scratch, { durable: true })
        await channel.bindQueue(scratch, scratch, '#')
        const message = Buffer.from(body)
        try {
          return await windowed(count, (i) => new Promise<void>((resolve, reject) => {
            channel.publish(scratch, 'order.created', message, { persistent: true, mandatory: true, messageId: `m${i}` }, (error: unknown) => (error ? reject(error) : resolve()))
          }))
        } finally {
          await channel.deleteQueue(scratch)
          await channel.deleteExchange(scratch)
        }
      } finally {
        await connection.close()
      }
    }
    case 'webhook': {
      const agent = new Agent({ keepAlive: true, maxSockets: webhookCeilingConnections })
      const url = new URL(spec.url)
      try {
        return await windowed(count, () => post(url, agent), webhookCeilingConnections)
      } finally {
        agent.destroy()
      }
    }
  }
}

/** `count` calls, `size` at a time; calls per second. */
async function windowed(count: number, publish: (i: number) => Promise<unknown>, size = ceilingWindow): Promise<number> {
  const started = performance.now()
  for (let i = 0; i < count; i += size) {
    const window: Promise<unknown>[] = []
    for (let j = i; j < Math.min(count, i + size); j++) window.push(publish(j))
    await Promise.all(window)
  }
  return count / ((performance.now() - started) / 1000)
}

function post(url: URL, agent: Agent): Promise<void> {
  return new Promise((resolve, reject) => {
    const outgoing = request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (response) => {
      response.resume()
      response.on('end', () => (response.statusCode! < 300 ? resolve() : reject(new Error(`HTTP ${response.statusCode}`))))
    })
    outgoing.on('error', reject)
    outgoing.end(body)
  })
}
