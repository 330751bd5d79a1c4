import type { Sql } from 'postgres'
import type { OutboxTable } from '../outbox/outbox-table.js'
import type { Logger } from '../types.js'
import { createdRange, createdWithin } from './created-range.js'
import { type BatchVerdicts, verdictCount } from './verdict.js'

/** SQL text of the settlement, built once per outbox. */
export interface SettleQueries {
  markProcessed: string
  markFailed: string
  hold: string
}

/**
 * Each statement also bounds `created_at` by the batch's earliest and latest ($2, $3 of markProcessed and
 * hold, $5, $6 of markFailed): on a partitioned outbox the executor then prunes the partitions no event of
 * the batch is in (one or two, not every partition's primary key probed per id); on a plain one the bound is
 * a filter on rows already found by id.
 */
export function settleQueries(outbox: OutboxTable): SettleQueries {
  const t = outbox.qualified
  const created = (from: number) => createdWithin(from)
  return {
    markProcessed: `update ${t} set processed_at = now() where id = any($1::bigint[]) and ${created(2)}`,
    // One statement for every failure of the batch. Dead-lettered rows keep processed_at NULL.
    markFailed: `
      update ${t} as o
         set attempts = o.attempts + 1,
             last_error = f.error,
             retry_at = now() + f.delay_ms * interval '1 millisecond',
             dead_at = case when o.attempts + 1 >= $4 then now() end
        from unnest($1::bigint[], $2::text[], $3::float8[]) as f(id, error, delay_ms)
       where o.id = f.id and o.${created(5)}
      returning o.id::text as id, o.dead_at is not null as dead`,
    // Held and deferred events step aside, no attempt charged.
    hold: `update ${t} set retry_at = now() + $4 * interval '1 millisecond' where id = any($1::bigint[]) and ${created(2)}`,
  }
}

const noneDead: ReadonlySet<string> = new Set()

/**
 * Settles a batch by its verdicts and COMMITs, pipelined (one round trip). Returns the ids of the failed
 * events that were dead-lettered: the SQL decides, from each row's attempts against `maxAttempts`.
 */
export async function outboxSettleBatch(connection: Sql, queries: SettleQueries, verdicts: BatchVerdicts, maxAttempts: number): Promise<ReadonlySet<string>> {
  return outboxSettleStatements(connection, queries, verdicts, maxAttempts, () => [connection.unsafe('commit').execute()])
}

/**
 * The settlement's statements, sent at once, then what `after` sends (the COMMIT, or what a shared transaction sends
 * after one outbox's settlement, see tenants/shared-turn.ts): one round trip for all. Resolves with the dead-lettered ids.
 */
export async function outboxSettleStatements(connection: Sql, queries: SettleQueries, verdicts: BatchVerdicts, maxAttempts: number, after: () => Promise<unknown>[]): Promise<ReadonlySet<string>> {
  const statements: Promise<unknown>[] = []
  const send = <T>(query: Promise<T>) => (statements.push(query), query)
  // Planned for the outbox as it is each time: a generic plan made while the outbox was nearly empty is a seq scan,
  // kept as the table grows (a held snapshot prunes nothing) until its statistics change. Prepared all the same, so
  // the statements go out at once with no describe round trip of their own; the COMMIT ends the setting.
  send(connection.unsafe('set local plan_cache_mode = force_custom_plan').execute())
  if (verdicts.processed.length > 0) send(connection.unsafe(queries.markProcessed, [ids(verdicts.processed), ...createdRange(verdicts.processed)], { prepare: true }).execute())
  let failed: Promise<Array<{ id: string; dead: boolean }>> | undefined
  if (verdicts.failed.length > 0) {
    const f = verdicts.failed
    failed = send(connection.unsafe<Array<{ id: string; dead: boolean }>>(queries.markFailed, [f.map((x) => x.event.id), f.map((x) => x.error), f.map((x) => x.delayMs), maxAttempts, ...createdRange(f.map((x) => x.event))], { prepare: true }).execute())
  }
  if (verdicts.held.length > 0) send(connection.unsafe(queries.hold, [ids(verdicts.held), ...createdRange(verdicts.held), verdicts.holdMs], { prepare: true }).execute())
  if (verdicts.deferred.length > 0) send(connection.unsafe(queries.hold, [ids(verdicts.deferred), ...createdRange(verdicts.deferred), verdicts.deferMs], { prepare: true }).execute())
  await Promise.all([...statements, ...after()])
  if (failed === undefined) return noneDead
  const dead = new Set<string>()
  for (const row of await failed) if (row.dead) dead.add(row.id)
  return dead
}

function ids(events: ReadonlyArray<{ id: string }>): string[] {
  return events.map((event) => event.id)
}

/** Counters since start; cheap enough to keep on the hot path. */
export interface PollerStats {
  batches: number
  processed: number
  failed: number
  dead: number
}

/** Settles the batch, then counts and logs what its verdicts did. Returns the dead-lettered ids. */
export async function settleBatch(connection: Sql, queries: SettleQueries, verdicts: BatchVerdicts, maxAttempts: number, stats: PollerStats, log: Logger): Promise<ReadonlySet<string>> {
  const dead = await outboxSettleBatch(connection, queries, verdicts, maxAttempts)
  countSettled(verdicts, dead, stats, log)
  return dead
}

/** Counts and logs what a settled (committed) batch's verdicts did. */
export function countSettled(verdicts: BatchVerdicts, dead: ReadonlySet<string>, stats: PollerStats, log: Logger): void {
  stats.batches++
  stats.processed += verdicts.processed.length
  stats.failed += verdicts.failed.length
  stats.dead += dead.size
  const counts = { claimed: verdictCount(verdicts), processed: verdicts.processed.length, failed: verdicts.failed.length, held: verdicts.held.length, deferred: verdicts.deferred.length }
  log.debug(counts, 'batch settled')
  for (const { event, error } of verdicts.failed) {
    const fields = { event_id: event.event_id, id: event.id, event_type: event.event_type, attempt: event.attempt, error }
    if (dead.has(event.id)) logDeadLettered(log, fields, 'after its last attempt')
    else log.warn(fields, 'event failed, will retry')
  }
}

/** Every dead-lettering the poller records is logged here: at error level, saying why. */
export function logDeadLettered(log: Logger, fields: Record<string, unknown>, why: string): void {
  log.error(fields, `event dead-lettered ${why}`)
}
