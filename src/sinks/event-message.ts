import { ClaimedEvent } from '../poller/claimed-event.js'
import { writerTraceparent } from '../poller/traceparent.js'
import type { OutboxEvent } from '../types.js'

/**
 * What every sink sends for an event besides its payload: its identity, type, entity and creation time, plus
 * its `metadata` when it has one. `attempt` and `processed_at` are left out: they describe the delivery, not
 * the event, and would make a re-delivery differ from the original.
 */
export interface EventMessageFields {
  event_id: string
  event_type: string
  entity_type: string
  entity_id: string
  /** Only when the event has a group. */
  group_key?: string
  /** ISO 8601, UTC. */
  created_at: string
  metadata?: Record<string, unknown>
}

export function eventMessageFields(event: OutboxEvent): EventMessageFields {
  const fields: EventMessageFields = {
    event_id: event.event_id,
    event_type: event.event_type,
    entity_type: event.entity_type,
    entity_id: event.entity_id,
    created_at: event.created_at.toISOString(),
  }
  if (event.group_key !== null) fields.group_key = event.group_key
  if (event.metadata !== null) fields.metadata = event.metadata
  return fields
}

/**
 * The message as JSON text: the fields, `payload` exactly as stored (its text is spliced in, never parsed
 * and re-serialized, so no number loses a digit), then `metadata`. A sink that also needs the fields
 * elsewhere (headers) passes the ones it computed.
 */
export function eventMessageJson(event: OutboxEvent, fields = eventMessageFields(event)): string {
  const { metadata, ...head } = fields
  return `${JSON.stringify(head).slice(0, -1)},"payload":${event.payloadText}${metadata === undefined ? '' : `,"metadata":${JSON.stringify(metadata)}`}}`
}

/**
 * The `traceparent` a sink sends with the event's message (a header, or a Redis field): the poller's span of the
 * event while an OpenTelemetry SDK records one, else the writer's stored in the event's metadata; undefined
 * when neither exists. Unlike the body, it can differ between two deliveries of an event.
 */
export function eventTraceparent(event: OutboxEvent): string | undefined {
  return event instanceof ClaimedEvent ? event.traceparent : writerTraceparent(event.metadata)
}
