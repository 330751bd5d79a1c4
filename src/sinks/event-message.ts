import type { OutboxEvent } from '../types.js'

/**
 * What every sink sends for an event besides its payload: its identity, type, entity and creation time, plus
 * its `metadata` where the outbox has that column. `attempt` and `processed_at` are left out: they describe
 * the delivery, not the event, and would make a re-delivery differ from the original.
 */
export interface EventMessageFields {
  event_id: string
  event_type: string
  entity_type: string
  entity_id: string
  /** ISO 8601, UTC. */
  created_at: string
  metadata?: unknown
}

export function eventMessageFields(event: OutboxEvent): EventMessageFields {
  const fields: EventMessageFields = {
    event_id: event.event_id,
    event_type: event.event_type,
    entity_type: event.entity_type,
    entity_id: event.entity_id,
    created_at: event.created_at.toISOString(),
  }
  const metadata = eventMetadata(event)
  if (metadata !== undefined) fields.metadata = metadata
  return fields
}

/**
 * The message as JSON text: the fields, `payload` exactly as stored (its text is spliced in, never parsed
 * and re-serialized, so no number loses a digit), then `metadata`.
 */
export function eventMessageJson(event: OutboxEvent): string {
  const { metadata, ...fields } = eventMessageFields(event)
  const head = JSON.stringify(fields).slice(0, -1)
  return `${head},"payload":${event.payloadText}${metadata === undefined ? '' : `,"metadata":${JSON.stringify(metadata)}`}}`
}

/** The event's `metadata`, if the claim selected one and it is not null. */
export function eventMetadata(event: OutboxEvent): unknown {
  const metadata = (event as { metadata?: unknown }).metadata
  return metadata === null ? undefined : metadata
}
