import type { Sql, TransactionSql } from 'postgres'
import { type BackfillState, outboxBackfills } from '../backfill/backfill-progress.js'
import { type LostCapture, lostCaptures } from '../capture/capture-registry.js'
import { horizonWarnings, type VacuumHorizon, vacuumHorizon } from '../database/vacuum-horizon.js'
import { outboxUnusedOrderingIndexes, type UnusedOrderingIndex } from '../outbox/ordering-index.js'
import { type OutboxTable, pendingCondition } from '../outbox/outbox-table.js'
import { outboxLayout, type OutboxLayout } from './partition-status.js'
import { outboxPausedTypes, type PausedType } from './pause.js'
import { parkedRetryAt } from '../poller/paused-types.js'

/** The outbox at one moment, from one snapshot. Counts are events; durations are seconds. */
export interface OutboxStatus {
  /** The moment measured: the database's clock, or the `now` given. */
  at: Date
  /** Not processed, not dead: `due` + `retrying` + `paused`. */
  pending: number
  /** Pending and claimable now: fresh events and retries whose time has come. */
  due: number
  /** Pending, waiting for a retry later than `at`. */
  retrying: number
  /** Pending events of paused types, parked until their pattern is resumed. */
  paused: number
  /** The event-type patterns paused now. */
  pausedTypes: PausedType[]
  /** Pending events a worker died on (claimed alone, one per batch); counted in `due` or `retrying` too. */
  suspect: number
  /** Dead-lettered: kept, never claimed again until replayed. */
  dead: number
  processedLastMinute: number
  processedLastHour: number
  /** Age of the oldest pending event (the lag); 0 when nothing is pending. */
  oldestPendingSeconds: number
  /** Creation-to-processed percentiles over the last 5 minutes; null when nothing was processed. */
  latency: { p50: number | null; p95: number | null; p99: number | null }
  /** Every event type with pending or dead events, or processed in the last hour, by name. */
  types: EventTypeStatus[]
  /** Connections named `outbox-poller/…` to this database, this one excepted. */
  replicas: ReplicaConnection[]
  /** Captured tables that were dropped, re-created or lost their triggers, or lost their key column. */
  lostCaptures: LostCapture[]
  /** Backfills not finished: running now, or stopped (resumable with `backfill --resume`). */
  backfills: BackfillState[]
  /** What holds back VACUUM of the outbox (long transactions, slots, prepared transactions), with its warnings. */
  horizon: VacuumHorizon & { warnings: string[] }
  /** Plain or partitioned, and on a partitioned outbox its partitions, with warnings when upkeep is not running. */
  layout: OutboxLayout
  /** Ordering indexes left from an ordering the outbox no longer records: every captured write still pays for them. */
  unusedOrderingIndexes: UnusedOrderingIndex[]
}

export interface EventTypeStatus {
  eventType: string
  pending: number
  dead: number
  processedLastHour: number
  /** Latency p95 over the last 5 minutes; null when none of this type was processed then. */
  p95: number | null
}

/** One connection of an outbox-poller process, from pg_stat_activity. */
export interface ReplicaConnection {
  /** `outbox-poller/<host>/<pid>/<role>` */
  applicationName: string
  /** `worker`, `supervisor`, `migrate`, `capture`, `status`, … */
  role: string
  /** The server process's pid (not the client's, which is in `applicationName`). */
  pid: number
  /** `active`, `idle`, `idle in transaction`, …; null where the role may not see other sessions' state. */
  state: string | null
  /** When the connection entered `state`. */
  since: Date | null
}

export interface OutboxStatusOptions {
  /** The moment to measure at. Default: the database's `now()`. Tests pass it to place fixtures exactly. */
  now?: Date
  /**
   * Measure per event type too (`types`), the part that reads the last hour's processed rows. Default: true.
   * The console leaves it out of most of its samples.
   */
  types?: boolean
}

/**
 * Measures the outbox in one read-only, repeatable-read transaction, so every number comes from the
 * same snapshot. Each count is an index scan over its own partial index (pending, retry, suspect, dead)
 * or a time-bounded range of `<outbox>_processed`, so the cost follows the backlog and the last hour's
 * throughput, never the number of rows kept (see sql/monitoring.sql for the plans).
 */
export async function outboxStatus(sql: Sql, outbox: OutboxTable, options: OutboxStatusOptions = {}): Promise<OutboxStatus> {
  const t = sql.unsafe(outbox.qualified)
  const at = sql`coalesce(${options.now ?? null}::timestamptz, now())`
  const pending = sql.unsafe(pendingCondition)
  const pendingFresh = sql`${pending} and retry_at is null`
  const pendingRetry = sql`${pending} and retry_at is not null`
  const processedIn = (window: string) => sql`processed_at > ${at} - ${window}::interval and processed_at <= ${at}`
  const latencySeconds = sql`extract(epoch from processed_at - created_at)::float8`

  return sql.begin('read only isolation level repeatable read', async (tx) => {
    const [counts] = await tx<CountsRow[]>`
      select ${at} as at,
        (select count(*) from ${t} where ${pendingFresh})::int as fresh,
        (select count(*) from ${t} where ${pending} and retry_at <= ${at})::int as retry_due,
        (select count(*) from ${t} where ${pending} and retry_at > ${at})::int as retrying,
        (select count(*) from ${t} where ${pending} and suspect)::int as suspect,
        (select count(*) from ${t} where ${pending} and retry_at = ${sql.unsafe(`'${parkedRetryAt}'`)})::int as paused,
        (select count(*) from ${t} where dead_at is not null)::int as dead,
        (select count(*) from ${t} where ${processedIn('1 minute')})::int as processed_minute,
        (select count(*) from ${t} where ${processedIn('1 hour')})::int as processed_hour,
        -- The oldest fresh event is the first of the pending index in id order; retries are older than
        -- their ids suggest, so the oldest of them counts too.
        (select greatest(0, extract(epoch from ${at} - min(created_at)))::float8 from (
           (select created_at from ${t} where ${pendingFresh} order by id limit 1)
           union all
           (select min(created_at) from ${t} where ${pendingRetry})) as oldest) as oldest_pending_seconds`
    const [latency] = await tx<{ p: number[] | null }[]>`
      select percentile_cont(array[0.5, 0.95, 0.99]) within group (order by ${latencySeconds}) as p
        from ${t} where ${processedIn('5 minutes')}`
    const types = options.types === false ? [] : await tx<TypeRow[]>`
      select event_type, sum(pending)::int as pending, sum(dead)::int as dead, sum(processed)::int as processed, max(p95) as p95
        from (select event_type, count(*) as pending, 0 as dead, 0 as processed, null::float8 as p95
                from (select event_type from ${t} where ${pendingFresh}
                      union all
                      select event_type from ${t} where ${pendingRetry}) as pending
               group by event_type
              union all
              select event_type, 0, count(*), 0, null from ${t} where dead_at is not null group by event_type
              union all
              select event_type, 0, 0, count(*),
                     percentile_cont(0.95) within group (order by ${latencySeconds}) filter (where ${processedIn('5 minutes')})
                from ${t} where ${processedIn('1 hour')} group by event_type) as by_type
       group by event_type
       order by event_type`
    const replicas = await outboxReplicaConnections(tx)
    const lost = await lostCaptures(tx, outbox)
    const horizon = await vacuumHorizon(tx)
    const pausedTypes = await outboxPausedTypes(tx, outbox)
    const backfills = await outboxBackfills(tx, outbox)
    const c = counts!
    const layout = await outboxLayout(tx, outbox, c.at)
    const unusedOrderingIndexes = await outboxUnusedOrderingIndexes(tx, outbox, layout.partitionBy !== null)
    const [p50 = null, p95 = null, p99 = null] = latency?.p ?? []
    return {
      at: c.at,
      pending: c.fresh + c.retry_due + c.retrying,
      due: c.fresh + c.retry_due,
      retrying: c.retrying - c.paused,
      paused: c.paused,
      pausedTypes,
      suspect: c.suspect,
      dead: c.dead,
      processedLastMinute: c.processed_minute,
      processedLastHour: c.processed_hour,
      oldestPendingSeconds: c.oldest_pending_seconds ?? 0,
      latency: { p50, p95, p99 },
      types: types.map((row) => ({ eventType: row.event_type, pending: row.pending, dead: row.dead, processedLastHour: row.processed, p95: row.p95 })),
      replicas,
      lostCaptures: lost,
      backfills,
      horizon: { ...horizon, warnings: horizonWarnings(horizon) },
      layout,
      unusedOrderingIndexes,
    }
  })
}

/** The connections of outbox-poller processes to this database, the caller's own excepted. */
async function outboxReplicaConnections(sql: Sql | TransactionSql): Promise<ReplicaConnection[]> {
  const rows = await sql<ReplicaRow[]>`
    select application_name, split_part(application_name, '/', 4) as role, pid, state, state_change as since
      from pg_stat_activity
     where application_name like ${'outbox-poller/%'} and datname = current_database() and pid <> pg_backend_pid()
     order by application_name, pid`
  return rows.map((row) => ({ applicationName: row.application_name, role: row.role, pid: row.pid, state: row.state, since: row.since }))
}

interface CountsRow {
  at: Date
  fresh: number
  retry_due: number
  retrying: number
  suspect: number
  paused: number
  dead: number
  processed_minute: number
  processed_hour: number
  oldest_pending_seconds: number | null
}

interface TypeRow {
  event_type: string
  pending: number
  dead: number
  processed: number
  p95: number | null
}

interface ReplicaRow {
  application_name: string
  role: string
  pid: number
  state: string | null
  since: Date | null
}
