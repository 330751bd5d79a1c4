import { hostname } from 'node:os'
import amqp, { type ChannelModel, type ConfirmChannel } from 'amqplib'
import { errorMessage } from '../errors.js'
import type { OutboxEvent } from '../types.js'
import { type BrokerDriver, BrokerSink } from './broker-sink.js'
import { type EventMessageFields, eventMessageFields, eventMessageJson, eventTraceparent } from './event-message.js'
import type { AmqpSinkSpec } from './parse-sink.js'
import type { ResolvedSinkOptions, Sink } from './sink.js'
import { sinkErrorMessage, sinkMisconfigured } from './sink-errors.js'
import { hasSchemaPlaceholder, routeFor } from './tenant-route.js'

/** One connection and its confirm channel, with the returns seen for messages not yet confirmed. */
interface AmqpLink {
  model: ChannelModel
  channel: ConfirmChannel
  /** Returned (unroutable) messages by message id: the broker sends basic.return before the basic.ack of the same message. */
  returns: Map<string, { returned?: string }>
}

/**
 * RabbitMQ through amqplib. Each event is a persistent message on a confirm channel, published `mandatory`
 * to the exchange with the event type as routing key: an ack without a return means a queue took it; a
 * return (no queue bound for that key) or a nack is a failed attempt. The message id is the event id.
 * A broker that blocks publishers (a memory or disk alarm) stops confirming: the publishes time out, which
 * counts as the broker being unavailable, not as the events' failure.
 */
export function createAmqpSink(spec: AmqpSinkSpec, options: ResolvedSinkOptions): Sink {
  return new BrokerSink(spec, amqpDriver(spec, options.timeoutMs), options)
}

function amqpDriver(spec: AmqpSinkSpec, timeoutMs: number): BrokerDriver<AmqpLink> {
  return {
    // a second batch publishes while the first waits for its confirms: RabbitMQ then has 500 messages to work on, not 250
    overlaps: true,
    async open(lost) {
      const model = await amqp.connect(spec.connectUrl, { timeout: timeoutMs, clientProperties: { connection_name: `outbox-poller ${hostname()}/${process.pid}` } }).catch((error: unknown) => {
        throw configOr(error, spec)
      })
      try {
        // 'error' always precedes 'close'; keep the server's reason for the outage message.
        let reason: string | undefined
        model.on('error', (error: Error) => (reason = error.message))
        model.on('close', () => lost(reason ?? 'connection closed'))
        const channel = await model.createConfirmChannel()
        channel.on('error', (error: Error) => (reason = error.message))
        channel.on('close', () => lost(reason ?? 'channel closed'))
        const returns = new Map<string, { returned?: string }>()
        channel.on('return', (message: amqp.Message) => {
          const pending = returns.get(message.properties.messageId as string)
          const fields = message.fields as unknown as { replyCode: number; replyText: string }
          if (pending !== undefined) pending.returned = `${fields.replyCode} ${fields.replyText}`
        })
        // per-tenant exchanges cannot be checked ahead: publishing to a missing one closes the channel, an outage of that route
        if (hasSchemaPlaceholder(spec.exchange)) {
          if (spec.declare !== undefined) throw sinkMisconfigured(spec.name, `declare cannot declare per-tenant exchanges (${spec.exchange}): declare each tenant's exchange`)
        } else if (spec.declare !== undefined) await channel.assertExchange(spec.exchange, spec.declare, { durable: true })
        else await channel.checkExchange(spec.exchange)
        return { model, channel, returns }
      } catch (error) {
        await model.close().catch(() => {})
        throw configOr(error, spec)
      }
    },

    async close(link) {
      await link.model.close()
    },

    sendBatch(link, events) {
      return events.map((event) => publishOne(link, spec, event))
    },

    isConnectionFailure(error) {
      const message = errorMessage(error)
      return message === 'channel closed' || /^(Channel|Connection) closed/.test(message) || (error as Error | undefined)?.name === 'IllegalOperationError'
    },
  }
}

/** The message's properties; its headers are the message's fields but the id, which is the message id, and the event's `traceparent`. */
function publishOptions(event: OutboxEvent, { event_id: _id, ...fields }: EventMessageFields): amqp.Options.Publish {
  const traceparent = eventTraceparent(event)
  const headers: Record<string, unknown> = traceparent === undefined ? fields : { ...fields, traceparent }
  return {
    persistent: true,
    mandatory: true,
    messageId: event.event_id,
    type: event.event_type,
    contentType: 'application/json',
    timestamp: Math.floor(event.created_at.getTime() / 1000),
    appId: 'outbox-poller',
    headers,
  }
}

/** Refused credentials, an unknown vhost, a missing exchange or one of another type: no retry fixes those. */
function configOr(error: unknown, spec: AmqpSinkSpec): unknown {
  const code = (error as { code?: unknown } | null)?.code
  const message = sinkErrorMessage(error, spec.secrets)
  if (code === 404 && spec.declare === undefined) {
    return sinkMisconfigured(spec.name, `exchange ${JSON.stringify(spec.exchange)} does not exist (declare it, or add &declare=topic to the URL)`)
  }
  if (code === 403 || code === 404 || code === 406 || code === 530 || /ACCESS[_-]REFUSED|NOT[_-]ALLOWED|PRECONDITION[_-]FAILED/.test(message)) {
    return sinkMisconfigured(spec.name, message)
  }
  return error
}

/** One event's publish: on the wire before this returns, confirmed when the promise resolves. */
function publishOne(link: AmqpLink, spec: AmqpSinkSpec, event: OutboxEvent): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const pending: { returned?: string } = {}
    link.returns.set(event.event_id, pending)
    const settle = (error: unknown) => {
      link.returns.delete(event.event_id)
      if (error) reject(error)
      else if (pending.returned !== undefined) {
        reject(new Error(`unroutable: returned ${pending.returned} (no queue bound to exchange ${JSON.stringify(routeFor(spec.exchange, event.schema))} for routing key ${JSON.stringify(event.event_type)})`))
      } else resolve()
    }
    try {
      const fields = eventMessageFields(event)
      link.channel.publish(routeFor(spec.exchange, event.schema), event.event_type, Buffer.from(eventMessageJson(event, fields)), publishOptions(event, fields), (error: unknown) => settle(error))
    } catch (error) {
      settle(error) // the channel closed under us: amqplib throws at once
    }
  })
}
