import { type JetStreamClient, JetStreamApiCodes, jetstream, jetstreamManager } from '@nats-io/jetstream'
import { connect, headers, type NatsConnection, nanos } from '@nats-io/transport-node'
import type { OutboxEvent } from '../types.js'
import { type BrokerDriver, BrokerSink } from './broker-sink.js'
import { eventMessageJson, eventTraceparent } from './event-message.js'
import type { NatsSinkSpec } from './parse-sink.js'
import type { ResolvedSinkOptions, Sink } from './sink.js'
import { sinkErrorMessage, sinkMisconfigured, sinkUnavailable } from './sink-errors.js'
import { hasSchemaPlaceholder, routeFor } from './tenant-route.js'

interface NatsLink {
  connection: NatsConnection
  js: JetStreamClient
}

/**
 * NATS JetStream through nats.js. Each event is published to `<subject>.<event_type>` and counts once the
 * stream's ack came back. `Nats-Msg-Id` is the event id, so the stream drops a re-delivery within its
 * duplicate window (2 minutes unless the stream says otherwise). The client's own reconnect is off: the
 * sink replaces a lost connection itself, so that an outage fails fast instead of buffering publishes.
 */
export function createNatsSink(spec: NatsSinkSpec, options: ResolvedSinkOptions): Sink {
  return new BrokerSink(spec, natsDriver(spec, options.timeoutMs), options)
}

function natsDriver(spec: NatsSinkSpec, timeoutMs: number): BrokerDriver<NatsLink> {
  return {
    overlaps: false,
    async open(lost) {
      const connection = await connect({ servers: spec.server, user: spec.user, pass: spec.pass, token: spec.token, name: 'outbox-poller', reconnect: false, timeout: timeoutMs }).catch(
        (error: unknown) => {
          throw (error as Error).name === 'AuthorizationError' ? sinkMisconfigured(spec.name, sinkErrorMessage(error, spec.secrets)) : error
        },
      )
      void connection.closed().then((error) => lost(error ? sinkErrorMessage(error, spec.secrets) : 'connection closed'))
      try {
        await ensureStream(connection, spec)
        return { connection, js: jetstream(connection, { timeout: timeoutMs }) }
      } catch (error) {
        await connection.close().catch(() => {})
        throw error
      }
    },

    async close(link) {
      await link.connection.close()
    },

    sendBatch(link, events) {
      return events.map((event) => publishOne(link, spec, timeoutMs, event))
    },

    isConnectionFailure(error) {
      for (let current = error, depth = 0; current instanceof Error && depth < 3; current = current.cause, depth++) {
        if (['ClosedConnectionError', 'ConnectionError', 'DrainingConnectionError', 'TimeoutError'].includes(current.name)) return true
      }
      return false
    },
  }
}

/** Checks the stream exists, or creates it (subjects `<subject>.>`) when the URL says `create=1`. */
async function ensureStream(connection: NatsConnection, spec: NatsSinkSpec): Promise<void> {
  let manager
  try {
    manager = await jetstreamManager(connection)
  } catch (error) {
    if ((error as Error).name === 'JetStreamNotEnabled') throw sinkMisconfigured(spec.name, 'JetStream is not enabled on the server')
    throw error
  }
  try {
    // per-tenant streams cannot be checked ahead: a missing one shows at publish as no responder, an outage
    if (hasSchemaPlaceholder(spec.stream)) {
      if (spec.create) throw sinkMisconfigured(spec.name, `create=1 cannot create per-tenant streams (${spec.stream}): create each tenant's stream with its subjects`)
      return
    }
    await manager.streams.info(spec.stream)
  } catch (error) {
    if ((error as { code?: unknown }).code !== JetStreamApiCodes.StreamNotFound) throw error
    if (!spec.create) throw sinkMisconfigured(spec.name, `stream ${JSON.stringify(spec.stream)} does not exist (create it with subjects "${spec.subject}.>", or add &create=1 to the URL)`)
    await manager.streams.add({
      name: spec.stream,
      subjects: [`${spec.subject}.>`],
      ...(spec.duplicateWindowMs === undefined ? {} : { duplicate_window: nanos(spec.duplicateWindowMs) }),
    })
  }
}

/** One event's publish: on the wire before this returns, confirmed when the promise resolves. */
async function publishOne(link: NatsLink, spec: NatsSinkSpec, timeoutMs: number, event: OutboxEvent): Promise<void> {
  const h = headers()
  h.set('Outbox-Event-Type', event.event_type)
  h.set('Outbox-Entity-Type', event.entity_type)
  h.set('Outbox-Entity-Id', event.entity_id)
  const traceparent = eventTraceparent(event)
  if (traceparent !== undefined) h.set('traceparent', traceparent)
  const subject = `${routeFor(spec.subject, event.schema)}.${event.event_type}`
  try {
    await link.js.publish(subject, eventMessageJson(event), { msgID: event.event_id, headers: h, timeout: timeoutMs })
  } catch (error) {
    // No responder: no stream listens on the subject right now (JetStream restarting, a stream without
    // a leader). Not this event's fault, and the connection itself is fine.
    // (nats.js retries a no-responder publish, then throws JetStreamNotEnabled with the RequestError as its cause)
    if (isNoResponders(error) || ((error as Error).name === 'JetStreamNotEnabled' && isNoResponders((error as Error).cause))) {
      throw sinkUnavailable(spec.name, `no JetStream stream answers on ${subject}`)
    }
    throw error
  }
}

function isNoResponders(error: unknown): boolean {
  return (error as Error | undefined)?.name === 'RequestError' && (error as { isNoResponders?: () => boolean }).isNoResponders?.() === true
}
