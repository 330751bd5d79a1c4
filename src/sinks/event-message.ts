import type { OutboxEvent } from '../types.js'

/**
 * What every sink sends for an event: its identity, type, entity, creation time and payload, plus its
 * `metadata` where the outbox has that column. `attempt` and `processed_at` are left out: they describe the
 * delivery, not the event, and would make a re-delivery differ from the original.
 */
export interface EventMessage {
  event_id: string
  event_type: string
  entity_type: string
  entity_id: string
  /** ISO 8601, UTC. */
  created_at: string
  payload: unknown
  metadata?: unknown
}

export function eventMessage(event: OutboxEvent): EventMessage {
  const message: EventMessage = {
    event_id: event.event_id,
    event_type: event.event_type,
    entity_type: event.entity_type,
    entity_id: event.entity_id,
    created_at: event.created_at.toISOString(),
    payload: event.payload,
  }
  const metadata = eventMetadata(event)
  if (metadata !== undefined) message.metadata = metadata
  return message
}

/** The event's `metadata`, if the claim selected one and it is not null. */
export function eventMetadata(event: OutboxEvent): unknown {
  const metadata = (event as { metadata?: unknown }).metadata
  return metadata === null ? undefined : metadata
}
