import { parseForRestringify, parseLosslessJson } from './lossless-json.js'
import { writerTraceparent } from './traceparent.js'
import type { OutboxEvent } from '../types.js'

/** A claimed row as the claim returns it: the payload still as the stored JSON text. */
export interface ClaimedRow {
  id: string
  event_id: string
  event_type: string
  entity_type: string
  entity_id: string
  group_key: string | null
  payload: string
  metadata: Record<string, unknown> | null
  created_at: Date
  attempt: number
}

const unparsed = Symbol('unparsed')

/**
 * An event as handlers and sinks see it. The payload arrives as the stored JSON text (`payloadText`, relayed
 * byte for byte by sinks) and is parsed only when a handler reads `payload`, without losing a number
 * (see lossless-json.ts).
 */
export class ClaimedEvent implements OutboxEvent {
  readonly schema: string
  readonly id: string
  readonly event_id: string
  readonly event_type: string
  readonly entity_type: string
  readonly entity_id: string
  readonly group_key: string | null
  readonly payloadText: string
  readonly metadata: Record<string, unknown> | null
  /** Always NULL: a claimed event is pending. */
  readonly processed_at: Date | null = null
  readonly created_at: Date
  readonly attempt: number
  #payload: unknown = unparsed
  /** The traceparent of the poller's span of this event, while an SDK records one (batch-trace.ts). */
  #spanTraceparent: string | undefined = undefined

  constructor(row: ClaimedRow, schema: string) {
    this.schema = schema
    this.id = row.id
    this.event_id = row.event_id
    this.event_type = row.event_type
    this.entity_type = row.entity_type
    this.entity_id = row.entity_id
    this.group_key = row.group_key
    this.payloadText = row.payload
    this.metadata = row.metadata
    this.created_at = row.created_at
    this.attempt = row.attempt
  }

  get payload(): unknown {
    if (this.#payload === unparsed) this.#payload = parseLosslessJson(this.payloadText)
    return this.#payload
  }

  /**
   * The W3C traceparent a sink puts in its message, so a consumer continues the trace: the poller's span of the
   * event when an OpenTelemetry SDK is registered, else the writer's, stored in `metadata.traceparent`.
   */
  get traceparent(): string | undefined {
    return this.#spanTraceparent ?? writerTraceparent(this.metadata)
  }

  /** Records the traceparent of the poller's span of this event. */
  traceWith(traceparent: string): void {
    this.#spanTraceparent = traceparent
  }

  /** For JSON.stringify(event): the payload with every number as stored (a BigInt would make it throw). */
  toJSON(): Record<string, unknown> {
    const { payloadText: _text, ...fields } = this
    return { ...fields, payload: parseForRestringify(this.payloadText) }
  }
}
