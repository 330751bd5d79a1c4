import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { type JsMsg, jetstream, jetstreamManager } from '@nats-io/jetstream'
import { connect as natsConnect } from '@nats-io/transport-node'
import amqp from 'amqplib'
import { createClient } from '@redis/client'
import { verifyWebhookSignature, webhookSigningKey } from '../../src/sinks/webhook-signature.js'

/** The shared services of this machine. */
export const services = {
  amqp: 'amqp://guest:guest@127.0.0.1:5672',
  nats: '127.0.0.1:4222',
  redis: 'redis://127.0.0.1:6379',
}

/** A durable queue bound to an exchange (both declared), so it keeps what arrives while nobody consumes. */
export async function bindQueue(exchange: string, queue: string, bindingKey: string): Promise<void> {
  const connection = await amqp.connect(services.amqp)
  try {
    const channel = await connection.createChannel()
    await channel.assertExchange(exchange, 'topic', { durable: true })
    await channel.assertQueue(queue, { durable: true })
    await channel.bindQueue(queue, exchange, bindingKey)
  } finally {
    await connection.close()
  }
}

/**
 * Consumes a queue until `expected` messages arrived, then stops and counts what is left: the result holds
 * every message the queue had, so a duplicate or a stray message shows in its length.
 */
export async function drainQueue(queue: string, expected: number, timeoutMs = 20_000): Promise<amqp.Message[]> {
  const connection = await amqp.connect(services.amqp)
  try {
    const channel = await connection.createChannel()
    await channel.prefetch(1000)
    const messages: amqp.Message[] = []
    let reached!: () => void
    const enough = new Promise<void>((resolve) => (reached = resolve))
    const { consumerTag } = await channel.consume(queue, (message) => {
      if (message === null) return
      messages.push(message)
      channel.ack(message)
      if (messages.length >= expected) reached()
    })
    const timer = setTimeout(reached, timeoutMs)
    await enough
    clearTimeout(timer)
    await channel.cancel(consumerTag)
    const { messageCount } = await channel.checkQueue(queue)
    for (let i = 0; i < messageCount; i++) {
      const message = await channel.get(queue, { noAck: true })
      if (message) messages.push(message)
    }
    return messages
  } finally {
    await connection.close()
  }
}

/** Messages a RabbitMQ queue holds. */
export async function queueLength(queue: string): Promise<number> {
  const connection = await amqp.connect(services.amqp)
  try {
    return (await (await connection.createChannel()).checkQueue(queue)).messageCount
  } finally {
    await connection.close()
  }
}

export async function deleteAmqp(exchange: string, queues: string[]): Promise<void> {
  const connection = await amqp.connect(services.amqp)
  try {
    const channel = await connection.createChannel()
    for (const queue of queues) await channel.deleteQueue(queue)
    await channel.deleteExchange(exchange)
  } finally {
    await connection.close()
  }
}

/** Every message of a JetStream stream, read with an ordered consumer. */
export async function readStream(stream: string): Promise<JsMsg[]> {
  const connection = await natsConnect({ servers: services.nats })
  try {
    const manager = await jetstreamManager(connection)
    const total = (await manager.streams.info(stream)).state.messages
    const messages: JsMsg[] = []
    if (total === 0) return messages
    const consumer = await jetstream(connection).consumers.get(stream)
    const iterator = await consumer.consume()
    const timer = setTimeout(() => void iterator.stop(), 20_000)
    for await (const message of iterator) {
      messages.push(message)
      if (messages.length >= total) break
    }
    clearTimeout(timer)
    return messages
  } finally {
    await connection.close()
  }
}

/** Messages stored in a stream; 0 when it does not exist yet. */
export async function natsStreamCount(stream: string): Promise<number> {
  const connection = await natsConnect({ servers: services.nats })
  try {
    const manager = await jetstreamManager(connection)
    return (await manager.streams.info(stream).catch(() => undefined))?.state.messages ?? 0
  } finally {
    await connection.close()
  }
}

/** A JetStream stream made by the test itself, e.g. with limits the sink's `create=1` does not set. */
export async function createNatsStream(stream: string, subjects: string[], limits: { max_msg_size?: number } = {}): Promise<void> {
  const connection = await natsConnect({ servers: services.nats })
  try {
    await (await jetstreamManager(connection)).streams.add({ name: stream, subjects, ...limits })
  } finally {
    await connection.close()
  }
}

export async function deleteNatsStream(stream: string): Promise<void> {
  const connection = await natsConnect({ servers: services.nats })
  try {
    await (await jetstreamManager(connection)).streams.delete(stream).catch(() => {})
  } finally {
    await connection.close()
  }
}

/** A Redis connection for tests (a fresh one each time: the server may have been paused). */
export async function withRedis<T>(use: (client: ReturnType<typeof testRedisClient>) => Promise<T>): Promise<T> {
  const client = testRedisClient()
  client.on('error', () => {})
  await client.connect()
  try {
    return await use(client)
  } finally {
    client.destroy()
  }
}

function testRedisClient() {
  return createClient({ url: services.redis })
}

export async function deleteRedisStream(stream: string): Promise<void> {
  await withRedis(async (client) => {
    const keys: string[] = []
    for await (const batch of client.scanIterator({ MATCH: `outbox-poller:dedupe:${stream}:*`, COUNT: 1000 })) keys.push(...batch)
    for (let i = 0; i < keys.length; i += 1000) await client.del(keys.slice(i, i + 1000))
    await client.del(stream)
  })
}

/** One request the webhook receiver got. */
export interface WebhookDelivery {
  id: string
  timestamp: string
  signatureValid: boolean
  body: Record<string, unknown>
  /** The body as sent, before any parse. */
  text: string
  headers: IncomingHttpHeaders
  at: number
  status: number
}

/** What the receiver answers to one request. */
export interface ReceiverAnswer {
  status: number
  headers?: Record<string, string>
}

/**
 * A local HTTP endpoint that verifies Standard Webhooks signatures with `secret` (401 when they fail) and
 * answers what `respond` says, 200 by default; a `respond` that returns a promise holds the response until
 * it settles. A delivery is recorded once answered.
 */
export async function startReceiver(
  secret: string,
  respond: (delivery: WebhookDelivery, seen: number) => ReceiverAnswer | Promise<ReceiverAnswer> = () => ({ status: 200 }),
): Promise<{ url: string; deliveries: WebhookDelivery[]; readonly mostConnections: number; close(): Promise<void> }> {
  const key = webhookSigningKey(secret)
  const deliveries: WebhookDelivery[] = []
  const seen = new Map<string, number>()
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', async () => {
      const text = Buffer.concat(chunks).toString('utf8')
      const id = String(request.headers['webhook-id'])
      const timestamp = String(request.headers['webhook-timestamp'])
      const signatureValid = verifyWebhookSignature(key, { id, timestamp, signature: String(request.headers['webhook-signature'] ?? ''), body: text })
      const delivery: WebhookDelivery = { id, timestamp, signatureValid, body: JSON.parse(text), text, headers: request.headers, at: Date.now(), status: 0 }
      const count = (seen.get(id) ?? 0) + 1
      seen.set(id, count)
      const answer = signatureValid ? await respond(delivery, count) : { status: 401 }
      delivery.status = answer.status
      deliveries.push(delivery)
      response.writeHead(answer.status, { 'content-type': 'text/plain', ...answer.headers })
      response.end(answer.status < 300 ? 'ok' : `refused with ${answer.status}`)
    })
  })
  server.keepAliveTimeout = 1_000
  // the most connections open at once
  let open = 0
  let mostConnections = 0
  server.on('connection', (socket) => {
    mostConnections = Math.max(mostConnections, ++open)
    socket.on('close', () => open--)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/hooks/outbox`,
    deliveries,
    get mostConnections() {
      return mostConnections
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve()) && server.closeAllConnections()),
  }
}
