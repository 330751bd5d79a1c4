import type { Logger as PinoLogger } from 'pino'
import type { Sql } from 'postgres'

/** The logger seam: any pino-compatible logger. */
export type Logger = Pick<PinoLogger, 'debug' | 'info' | 'warn' | 'error' | 'child'>

/** One outbox row as a handler sees it: the seed's fields with fixed types, plus the attempt number. */
export interface OutboxEvent<Payload = unknown> {
  /** The schema of the outbox the event came from: the tenant, when a poller serves several (`schemas`). */
  readonly schema: string
  /** The row's bigint id, as a string (int8 is wider than a JS number). */
  readonly id: string
  /** Unique event id: the idempotency key for consumers. */
  readonly event_id: string
  /** `<entity>.created`, `<entity>.updated`, `<entity>.deleted`, or an explicit type. */
  readonly event_type: string
  readonly entity_type: string
  readonly entity_id: string
  /** The group its capture's `groupBy` column (or `emit`) gave it, ordered by under `ordering: 'group'`; null when none. */
  readonly group_key: string | null
  /**
   * `{ data }`, and for updates `{ data, previous_attributes }` with the changed columns' old values. Parsed
   * from `payloadText` on first read, without silent loss: an integer beyond ±Number.MAX_SAFE_INTEGER is a
   * BigInt, any other number a double cannot hold exactly is its exact decimal text (a string); every other
   * number is a number.
   */
  readonly payload: Payload
  /** The payload as stored: PostgreSQL's JSON text of the jsonb value. Sinks relay it byte for byte. */
  readonly payloadText: string
  /** Event context: correlation_id, causation_id, actor, txid, and whatever outbox.metadata held. */
  readonly metadata: Record<string, unknown> | null
  /** Always null while the event is being handled. */
  readonly processed_at: Date | null
  /** Time of the transaction that wrote the change. */
  readonly created_at: Date
  /** 1 on the first try. */
  readonly attempt: number
}

/** What a handler gets besides the event. */
export interface HandlerContext {
  /** Aborted when the handler times out or the poller is forced to stop. */
  readonly signal: AbortSignal
  /** A child logger bound to the event's id and type. */
  readonly log: Logger
  /**
   * A savepoint inside the batch transaction, as a postgres.js instance: what the handler writes through it
   * commits together with the event's processed_at, or rolls back with the event's failure (exactly-once
   * effects in the outbox's database). Handlers that use it take turns within a batch; a handler holding
   * it must honour `signal`. Under `txMode: 'batch'` the batch's handlers share one savepoint at the same
   * time instead, and when one of them fails, the others that used it run again (see PollerOptions.txMode).
   */
  tx(): Promise<Sql>
}

/** A handler: throw (or reject) to fail the event; it is then retried with backoff. */
export type Handler = (event: OutboxEvent, ctx: HandlerContext) => void | Promise<void>

/** One function for every event, or event-type patterns (`issue.created`, `issue.*`, `*`) to functions. */
export type HandlerMap = Handler | Record<string, Handler>
