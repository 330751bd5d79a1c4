import type { Sql, TransactionSql } from 'postgres'
import { stringifyLosslessJson } from '../poller/lossless-json.js'
import { type OutboxTable, outboxTable } from '../outbox/outbox-table.js'

/** An event that is not a row change. */
export interface ExplicitEvent {
  event_type: string
  entity_type: string
  entity_id: string
  /**
   * The event's group, ordered by under `--ordering group`, e.g. the order's id for an event of one of its lines.
   * Default: none (ordered by its entity alone). Needs migration 0008_group_key.
   */
  group_key?: string | null
  payload?: unknown
  metadata?: Record<string, unknown>
}

/** The event context a transaction's events carry in `metadata`. */
export interface EventContextValues {
  correlationId?: string
  causationId?: string
  actor?: string
  /**
   * A W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), e.g. the active span's: the poller's span of each
   * event continues this trace. One not of the W3C form is ignored, never an error.
   */
  traceparent?: string
  /** Anything else, as a JSON object. */
  metadata?: Record<string, unknown>
}

/** A postgres.js transaction (or instance), or a Kysely transaction. */
export type Executor = Sql | TransactionSql | { executeQuery: unknown; selectFrom: unknown }

/**
 * Writes an explicit event in the caller's transaction (same shape and guarantees as a captured change).
 * Returns its event_id. Works on a postgres.js transaction or a Kysely transaction. A BigInt in the payload
 * is written as a JSON number with all its digits (a handler then gets it back as a BigInt).
 */
export async function emit(tx: Executor, event: ExplicitEvent, outbox: OutboxTable = outboxTable('public', 'outbox')): Promise<string> {
  // Payload and metadata go as JSON text we wrote: a BigInt becomes its digits, where postgres.js's own
  // serialization of a jsonb parameter would throw.
  // An event without a group goes through the five-argument function, which roles granted before 0008 may call.
  const grouped = event.group_key !== undefined && event.group_key !== null
  const text = `select ${outbox.emitFunction}($1, $2, $3, $4::text::jsonb, $5::text::jsonb${grouped ? ', $6::text' : ''}) as event_id`
  const metadata = event.metadata === undefined ? null : stringifyLosslessJson(event.metadata)
  const values = [event.event_type, event.entity_type, event.entity_id, stringifyLosslessJson(event.payload ?? {}), metadata, ...(grouped ? [event.group_key] : [])]
  const [row] = await run(tx, text, values)
  return row!.event_id as string
}

/** Attaches context to every event the transaction writes (captured or emitted): SET LOCAL outbox.*. */
export async function withEventContext(tx: Executor, context: EventContextValues): Promise<void> {
  await run(tx, `select set_config('outbox.correlation_id', $1, true), set_config('outbox.causation_id', $2, true), set_config('outbox.actor', $3, true), set_config('outbox.metadata', $4, true), set_config('outbox.traceparent', $5, true)`, [
    context.correlationId ?? '',
    context.causationId ?? '',
    context.actor ?? '',
    context.metadata === undefined ? '' : stringifyLosslessJson(context.metadata),
    context.traceparent ?? '',
  ])
}

async function run(tx: Executor, text: string, values: unknown[]): Promise<Array<Record<string, unknown>>> {
  if (typeof (tx as Sql).unsafe === 'function') return (tx as Sql | TransactionSql).unsafe(text, values as never[]) as unknown as Array<Record<string, unknown>>
  // Kysely has no positional raw parameters: rebuild the query as a template with its values.
  const { sql } = await import('kysely')
  const parts = text.split(/\$\d+/)
  const order = [...text.matchAll(/\$(\d+)/g)].map((match) => values[Number(match[1]) - 1])
  const template = Object.assign([...parts], { raw: [...parts] }) as unknown as TemplateStringsArray
  const result = await sql<Record<string, unknown>>(template, ...order).execute(tx as never)
  return result.rows
}
