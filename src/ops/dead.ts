import type { Sql } from 'postgres'
import type { OutboxTable } from '../outbox/outbox-table.js'
import { replaySelectionCondition } from './replay.js'

/** Which dead events: by type pattern, ids and how recently they died. Every field optional (all dead events). */
export interface DeadSelection {
  /** `issue.created`, `issue.*` or `*` (the default). */
  typePattern?: string
  /** Only these row ids (bigint ids, as strings). */
  ids?: readonly string[]
  /** Only events that died at or after this moment. */
  since?: Date
}

/** A dead-lettered event, as `outbox-poller dead` lists it. */
export interface DeadEvent {
  /** The row's bigint id, as a string. */
  id: string
  event_id: string
  event_type: string
  entity_id: string
  attempts: number
  last_error: string | null
  dead_at: Date
  created_at: Date
}

/** A dead event with everything the console's detail page shows; `payload` only when asked for. */
export interface DeadEventDetail extends DeadEvent {
  entity_type: string
  metadata: unknown
  payload?: unknown
}

export interface DeadEventsOptions extends DeadSelection {
  /** Most events listed, newest first. */
  limit: number
}

/**
 * Dead events, most recently dead first: a backward scan of `<outbox>_dead` that stops after `limit` rows.
 * The selection is replay's (replaySelectionCondition), so a list, a replay and a delete with the same
 * filters always mean the same events.
 */
export async function outboxDeadEvents(sql: Sql, outbox: OutboxTable, options: DeadEventsOptions): Promise<DeadEvent[]> {
  const rows = await sql<DeadEvent[]>`
    select id::text as id, event_id, event_type, entity_id, attempts, last_error, dead_at, created_at
      from ${sql.unsafe(outbox.qualified)}
     where ${replaySelectionCondition(sql, 'dead', options, sql`now()`)}
     order by dead_at desc, id desc
     limit ${options.limit}`
  return [...rows]
}

/** One dead event by row id, or undefined if it is not dead (any more). The payload only with `payload: true`. */
export async function outboxDeadEvent(sql: Sql, outbox: OutboxTable, id: string, options: { payload: boolean }): Promise<DeadEventDetail | undefined> {
  const [row] = await sql<DeadEventDetail[]>`
    select id::text as id, event_id, event_type, entity_type, entity_id, attempts, last_error, dead_at, created_at, metadata,
           ${options.payload ? sql`payload` : sql`null`} as payload
      from ${sql.unsafe(outbox.qualified)}
     where id = ${id}::bigint and dead_at is not null`
  if (row !== undefined && !options.payload) delete row.payload
  return row
}

/** How many dead events the selection holds now (for a confirmation threshold). */
export async function outboxDeadCount(sql: Sql, outbox: OutboxTable, selection: DeadSelection): Promise<number> {
  const [row] = await sql<{ count: number }[]>`
    select count(*)::int as count from ${sql.unsafe(outbox.qualified)} where ${replaySelectionCondition(sql, 'dead', selection, sql`now()`)}`
  return row!.count
}

/**
 * Deletes the selected dead events for good, in chunks of `chunkSize` rows, each its own short transaction
 * with `SKIP LOCKED`; only events dead before the delete started. Returns how many. Idempotent.
 */
export async function outboxDeleteDead(sql: Sql, outbox: OutboxTable, selection: DeadSelection & { chunkSize: number }): Promise<number> {
  const t = sql.unsafe(outbox.qualified)
  const [clock] = await sql<{ started: Date }[]>`select now() as started`
  let deleted = 0
  for (;;) {
    const chunk = await sql`
      delete from ${t} where id in (
        select id from ${t} where ${replaySelectionCondition(sql, 'dead', selection, sql`${clock!.started}::timestamptz`)}
         order by dead_at limit ${selection.chunkSize} for update skip locked)`
    deleted += chunk.count
    if (chunk.count < selection.chunkSize) return deleted
  }
}
