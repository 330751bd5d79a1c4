import type { Sql } from 'postgres'
import { ClaimedEvent, type ClaimedRow } from './claimed-event.js'
import type { OutboxTable } from './outbox-table.js'

/** A failed event's settlement. */
export interface Failure {
  id: string
  error: string
  /** Milliseconds until the next attempt (ignored if the event is dead-lettered). */
  delayMs: number
}

/** SQL text of the runtime queries, built once per outbox (identifiers quoted once, values always parameters). */
export interface OutboxQueries {
  claim: string
  markProcessed: string
  markFailed: string
  hold: string
  setAsleep: string
  clearAsleep: string
  chargeCrash: string
}

/** How the claim orders events: `none`, or `entity` (one entity's events in id order, one at a time, across replicas). */
export interface ClaimOrdering {
  ordering: 'none' | 'entity'
  /** Whether a dead event holds back the later events of its entity (`block`) or not (`continue`). */
  onDead: 'continue' | 'block'
}

export function outboxQueries(outbox: OutboxTable, order: ClaimOrdering = { ordering: 'none', onDead: 'continue' }): OutboxQueries {
  const t = outbox.qualified
  const columns = 'id, event_id, event_type, entity_type, entity_id, payload::text as payload, metadata, processed_at, created_at, attempts + 1 as attempt'
  // Ordered mode: only an entity's head — no earlier event of the entity still pending (nor dead, under
  // block) — may be claimed. A head locked by another replica or waiting for its retry holds back its own
  // entity only. One probe of the entity index per candidate row.
  const head =
    order.ordering === 'entity'
      ? `and not exists (select 1 from ${t} as earlier where earlier.entity_type = o.entity_type and earlier.entity_id = o.entity_id
           and earlier.id < o.id and earlier.processed_at is null${order.onDead === 'continue' ? ' and earlier.dead_at is null' : ''})`
      : ''
  return {
    // A due suspect (see 0002_suspects.sql) alone, in a batch of one; otherwise due retries first (by due
    // time), then fresh events in id order, at most $1 in all. Each part is an index scan over its own
    // partial index, so a long retry backlog never slows the claim of fresh rows. The rows stay locked
    // until the batch transaction ends: a crash rolls back and frees them at once.
    claim: `
      with suspect as (
        select ${columns} from ${t} as o
         where processed_at is null and dead_at is null and suspect and retry_at <= now() ${head}
         order by retry_at limit 1 for update skip locked
      ), room as (
        select case when exists (select 1 from suspect) then 0 else $1::int end as n
      ), retry as (
        select ${columns} from ${t} as o
         where processed_at is null and dead_at is null and retry_at is not null and retry_at <= now() and not suspect ${head}
         order by retry_at limit (select n from room) for update skip locked
      ), fresh as (
        select ${columns} from ${t} as o
         where processed_at is null and dead_at is null and retry_at is null ${head}
         order by id limit (select n from room) - (select count(*) from retry) for update skip locked
      )
      select * from suspect union all select * from retry union all select * from fresh`,
    markProcessed: `update ${t} set processed_at = now() where id = any($1::bigint[])`,
    // One statement for every failure of the batch. Dead-lettered rows keep processed_at NULL.
    markFailed: `
      update ${t} as o
         set attempts = o.attempts + 1,
             last_error = f.error,
             retry_at = now() + f.delay_ms * interval '1 millisecond',
             dead_at = case when o.attempts + 1 >= $4 then now() end
        from unnest($1::bigint[], $2::text[], $3::float8[]) as f(id, error, delay_ms)
       where o.id = f.id
      returning o.id::text as id, o.dead_at is not null as dead`,
    // Unmatched events under --unmatched hold, and deferred ones (RetryLaterError): step aside, no attempt charged.
    hold: `update ${t} set retry_at = now() + $2 * interval '1 millisecond' where id = any($1::bigint[])`,
    // The supervisor's record of a worker that died mid-batch: one attempt charged to each event still
    // unprocessed, marked suspect and due at once (isolation, not backoff, is what slows it down).
    chargeCrash: `
      update ${t}
         set attempts = attempts + 1,
             last_error = $2,
             suspect = true,
             retry_at = now(),
             dead_at = case when attempts + 1 >= $3 then now() end
       where id = any($1::bigint[]) and processed_at is null and dead_at is null
      returning id::text as id, event_type, dead_at is not null as dead`,
    setAsleep: `update ${outbox.wakeup} set asleep = true where not asleep`,
    clearAsleep: `update ${outbox.wakeup} set asleep = false where asleep`,
  }
}

/**
 * Claim a batch: BEGIN and the claim go out together (one round trip). `connection` must be a pool of
 * exactly one connection, so that BEGIN, the claim and the settlement share it.
 */
export function outboxClaimBatch(connection: Sql, queries: OutboxQueries, batchSize: number): Promise<ClaimedEvent[]> {
  const begin = connection.unsafe('begin')
  const claim = connection.unsafe<ClaimedRow[]>(queries.claim, [batchSize], { prepare: true })
  return Promise.all([begin, claim]).then(([, rows]) => rows.map((row) => new ClaimedEvent(row)))
}

export interface Settlement {
  processed: string[]
  failed: Failure[]
  held: string[]
  holdMs: number
  deferred: string[]
  deferMs: number
  maxAttempts: number
}

/** Settle a batch and COMMIT, pipelined (one round trip). Returns the ids that were dead-lettered. */
export async function outboxSettleBatch(connection: Sql, queries: OutboxQueries, settlement: Settlement): Promise<string[]> {
  const statements: Promise<unknown>[] = []
  if (settlement.processed.length > 0) statements.push(connection.unsafe(queries.markProcessed, [settlement.processed], { prepare: true }))
  let failed: Promise<Array<{ id: string; dead: boolean }>> | undefined
  if (settlement.failed.length > 0) {
    const f = settlement.failed
    failed = connection.unsafe(queries.markFailed, [f.map((x) => x.id), f.map((x) => x.error), f.map((x) => x.delayMs), settlement.maxAttempts], { prepare: true })
    statements.push(failed)
  }
  if (settlement.held.length > 0) statements.push(connection.unsafe(queries.hold, [settlement.held, settlement.holdMs], { prepare: true }))
  if (settlement.deferred.length > 0) statements.push(connection.unsafe(queries.hold, [settlement.deferred, settlement.deferMs], { prepare: true }))
  statements.push(connection.unsafe('commit'))
  await Promise.all(statements)
  return failed === undefined ? [] : (await failed).filter((row) => row.dead).map((row) => row.id)
}

export function outboxRollback(connection: Sql): Promise<unknown> {
  return connection.unsafe('rollback')
}

/** Raise the flag that makes writers NOTIFY. True if this call raised it (then the caller re-checks for work). */
export async function outboxSetAsleep(sql: Sql, queries: OutboxQueries): Promise<boolean> {
  const result = await sql.unsafe(queries.setAsleep)
  return result.count > 0
}

export async function outboxClearAsleep(sql: Sql, queries: OutboxQueries): Promise<void> {
  await sql.unsafe(queries.clearAsleep)
}

/** Charges a crash to the events a dead worker was handling. Returns the ids charged and the events dead-lettered. */
export async function outboxChargeCrash(sql: Sql, queries: OutboxQueries, ids: readonly string[], error: string, maxAttempts: number): Promise<{ charged: string[]; dead: Array<{ id: string; event_type: string }> }> {
  const rows = await sql.unsafe<Array<{ id: string; event_type: string; dead: boolean }>>(queries.chargeCrash, [ids as string[], error, maxAttempts])
  return { charged: rows.map((row) => row.id), dead: rows.filter((row) => row.dead) }
}
