import type { Sql } from 'postgres'
import { ClaimedEvent, type ClaimedRow } from './claimed-event.js'
import { createdRange, createdWithin } from './created-range.js'
import type { OutboxOrdering } from '../outbox/outbox-checks.js'
import { type OutboxTable, quoteLiteral } from '../outbox/outbox-table.js'
import { groupHash, truncatedCondition } from '../outbox/ordering-index.js'

/** SQL text of the claim, built once per outbox (identifiers quoted once, values always parameters). */
export interface ClaimQueries {
  /** The outbox's schema, which every claimed event carries (`event.schema`). */
  schema: string
  begin: string
  claim: string
  /** Sent right after the claim (and the relock): the batch's handlers plan their own statements as configured. */
  afterClaim: string
  relock: string
}

/** What a batch transaction sets with SET LOCAL (ms; 0 is off), so it holds behind a transaction pooler too. */
export interface BatchTimeouts {
  statementTimeoutMs: number
  idleInTransactionTimeoutMs: number
}

/**
 * `scanned`: the table the claim reads its rows from, the outbox itself unless it is one partition of it (see
 * claim-partition.ts); the ordered modes' head probes and the relock always read the whole outbox.
 */
export function claimQueries(outbox: OutboxTable, order: OutboxOrdering = { ordering: 'none', onDead: 'continue' }, timeouts?: BatchTimeouts, scanned: OutboxTable = outbox): ClaimQueries {
  const t = outbox.qualified
  const from = scanned.qualified
  // A partition read directly is claimed from only while it is one of the outbox's: one detached (its events no
  // longer the outbox's, and a settlement through the outbox no longer finding them) gives nothing, and the next
  // claim goes through the parent. An uncorrelated subquery: once per part, one catalog probe.
  const attached = scanned === outbox ? '' : `and (select exists (select 1 from pg_catalog.pg_inherits where inhrelid = ${quoteLiteral(from)}::regclass and inhparent = ${quoteLiteral(t)}::regclass))`
  // The payload stays jsonb (a TOAST pointer) until a row is known to fit: rows past the budget are never read.
  // No processed_at: a claimed row is pending (the claim's own condition), so ClaimedEvent has it NULL.
  const columns = 'id, event_id, event_type, entity_type, entity_id, group_key, payload, metadata, created_at, attempts, pg_column_size(payload) + coalesce(pg_column_size(metadata), 0) as size'
  // One text column names the row's part ('s' suspect, 'r' retry, 'f' fresh): each column costs every row a field to parse.
  const output = (payload: string) => `id, event_id, event_type, entity_type, entity_id, group_key, ${payload} as payload, metadata, created_at, attempts + 1 as attempt, size, part`
  const head = headCondition(t, order)
  // The parts in claim order (a window without ORDER BY keeps it, and costs no sort), then what the caller reads.
  const parts = `select 's'::text as part, * from suspect union all select 'r', * from retry union all select 'f', * from fresh`
  const settings = timeouts === undefined ? '' : `; set local statement_timeout = ${Math.trunc(timeouts.statementTimeoutMs)}; set local idle_in_transaction_session_timeout = ${Math.trunc(timeouts.idleInTransactionTimeoutMs)}`
  return {
    schema: outbox.schema,
    // One simple-protocol message, pipelined with the claim: the settings cost no round trip. No JIT: an ordered
    // claim's estimated cost (its head probes) can pass jit_above_cost, and compiling it took a second a claim.
    // The generic plan from the first claim on: right after an ANALYZE that saw every row pending, the primary key
    // and the pending index cost the same to the planner, and the custom plans of the next claims (five, by
    // default) took the primary key in 8 of 14 drains of 3 replicas, walking every processed row from the claim's
    // floor (or from 0, a sweep); the generic plan, where $4's selectivity is a default, took the pending index
    // every time — and no claim pays for its planning. No sort: every part is read in its index's order, and a
    // sort would let the planner read the fresh part from another index that covers pending rows (on PostgreSQL 18,
    // whose skip scan serves `id >= $4` from outbox_entity_pending's third column) whenever that one is the
    // smaller: the pending index is then never scanned, none of its dead entries is marked, and it grows by every
    // insert until VACUUM, which keeps it the larger (BENCHMARKS.md, the soak on PostgreSQL 18).
    // Reading one partition, the batch locks the outbox first all the same (ONLY: not its partitions), as a claim
    // through it and its settlement do: partition DDL (DETACH, DROP) locks the outbox, then the partition, and a
    // batch that held the partition and then waited for the outbox would deadlock with it.
    begin: `begin;${scanned === outbox ? '' : ` lock table only ${t} in row exclusive mode;`} set local jit = off; set local plan_cache_mode = force_generic_plan; set local enable_sort = off${settings}`,
    afterClaim: 'set local plan_cache_mode = default; set local enable_sort = default',
    // When $3 allows it, a due suspect (see 0002_suspects.sql) alone, in a batch of one; otherwise due
    // retries first (by due time), then fresh events in id order from id $4 (the ClaimFloor: no fresh event is
    // claimable below it, and the dead index entries there are not walked), at most $1 in all. Each part is an index
    // scan over its own partial index, so a long retry backlog never slows the claim of fresh rows. Then
    // the byte budget $2 on the rows' stored sizes. Usually the whole claim fits, which one sum tells; else a
    // running total in claim order keeps the rows that fit (the first always does). FOR UPDATE cannot share
    // a query level with a window function, so the window runs over the locked rows. Rows past the budget
    // stay unread; the first of them comes back without its payload, telling the caller that rows past the
    // budget were locked too (see outboxClaimBatch).
    // The rows stay locked until the batch transaction ends: a crash rolls back and frees them at once.
    claim: `
      with suspect as (
        select ${columns} from ${from} as o
         where $3::boolean and processed_at is null and dead_at is null and suspect and retry_at <= now() ${head} ${attached}
         order by retry_at limit 1 for update skip locked
      ), room as (
        select case when exists (select 1 from suspect) then 0 else $1::int end as n
      ), retry as (
        select ${columns} from ${from} as o
         where processed_at is null and dead_at is null and retry_at is not null and retry_at <= now() and not suspect ${head} ${attached}
         order by retry_at limit (select n from room) for update skip locked
      ), fresh as (
        select ${columns} from ${from} as o
         where processed_at is null and dead_at is null and retry_at is null and id >= $4::bigint ${head} ${attached}
         order by id limit (select n from room) - (select count(*) from retry) for update skip locked
      ), total as (
        select (select coalesce(sum(size), 0) from suspect) + (select coalesce(sum(size), 0) from retry) + (select coalesce(sum(size), 0) from fresh) as bytes
      )
      select ${output('payload::text')} from (${parts}) as c where (select bytes from total) <= $2::bigint
      union all
      select ${output('case when running <= $2::bigint or running = size then payload::text end')}
        from (select *, sum(size) over (rows between unbounded preceding and current row) as running from (${parts}) as c
               where (select bytes from total) > $2::bigint) as m
       where running - size < $2::bigint`,
    // After a claim that locked rows past the budget and rolled back: lock again those within it that are
    // still as claimed (another replica may have taken, failed or processed one in between). Bounded by the rows'
    // created_at ($3, $4), so a partitioned outbox probes only their partitions.
    relock: `
      select o.id::text as id from ${t} as o join unnest($1::bigint[], $2::int[]) as c(id, attempts) on o.id = c.id
       where ${createdWithin(3, 'o')} and o.attempts = c.attempts and o.processed_at is null and o.dead_at is null and (o.retry_at is null or o.retry_at <= now())
         for update of o skip locked`,
  }
}

/** Still in the way of a later event: pending, or dead under `--ordering-on-dead block`. */
function blocking(alias: string, onDead: OutboxOrdering['onDead']): string {
  return `${alias}.processed_at is null${onDead === 'continue' ? ` and ${alias}.dead_at is null` : ''}`
}

/**
 * Ordered modes: only a head may be claimed. Under `entity`, an entity's head: no earlier event of the entity still
 * pending (nor dead, under block). Under `group`, an event that is both its entity's head and, if it has a group, its
 * group's head: a group's events run one at a time in id order, an entity's too (across a change of its group), and
 * an event without a group is ordered by its entity alone. A head locked by another replica or waiting for its retry
 * holds back its own entity and group only. One index probe per candidate row and key (see ordering-index.ts); every
 * wait is for a lower id, so the lowest pending event is always claimable. In both modes a `<entity_type>.truncated`
 * event is a barrier for its whole entity type (a consumer that clears its copy must not then apply an older change):
 * it waits for every earlier pending event of the type, and every later event of the type waits for it.
 */
function headCondition(t: string, order: OutboxOrdering): string {
  if (order.ordering === 'none') return ''
  // OFFSET 0 keeps each probe a subplan (an index probe per candidate): as an anti join the planner may hash the
  // candidates by entity and compare every pair of one entity's events, quadratic in a hot entity's backlog (one
  // entity with 30,000 pending events: 42 s a claim on PostgreSQL 15)
  const pending = `earlier.id < o.id and ${blocking('earlier', order.onDead)}`
  const entity = `and not exists (select 1 from ${t} as earlier where earlier.entity_type = o.entity_type and earlier.entity_id = o.entity_id and ${pending} offset 0)`
  const group = order.ordering === 'group' ? `
           and (o.group_key is null or not exists (select 1 from ${t} as earlier where ${groupHash('earlier.group_key')} = ${groupHash('o.group_key')} and earlier.group_key = o.group_key and ${pending} offset 0))` : ''
  return `${entity}${group} ${truncateBarrier(t, order.onDead)}`
}

/**
 * The truncate barrier. Truncations are rare: the first arm, an uncorrelated subquery that runs once per claim
 * part over the (nearly always empty) barrier index, settles it for every candidate when none is pending. Else
 * per candidate: no earlier barrier of its type (a probe of that index), and, for a barrier itself, no earlier
 * event of its type at all (a walk over the type's earlier pending events, only for the barrier rows).
 * One statement, one snapshot: across replicas, an event in flight elsewhere is still pending here.
 */
function truncateBarrier(t: string, onDead: OutboxOrdering['onDead']): string {
  return `and ((select not exists (select 1 from ${t} as b where ${truncatedCondition('b')} and ${blocking('b', onDead)}))
           or (not exists (select 1 from ${t} as b where b.entity_type = o.entity_type and b.id < o.id and ${truncatedCondition('b')} and ${blocking('b', onDead)})
               and (not (${truncatedCondition('o')})
                    or not exists (select 1 from ${t} as earlier where earlier.entity_type = o.entity_type and earlier.id < o.id and ${blocking('earlier', onDead)}))))`
}

export interface ClaimLimits {
  /** Most events. */
  batchSize: number
  /** Most stored bytes of payload and metadata; the first event is claimed whatever its size. */
  maxBytes: number
  /** Whether a due suspect may be claimed (alone). */
  suspects: boolean
  /** The lowest id of a fresh event to claim (see ClaimFloor); `'0'`: every one. */
  fromId: string
}

/** A claimed batch. */
export interface ClaimedBatch {
  events: ClaimedEvent[]
  /** Stored bytes of the events' payloads and metadata. */
  bytes: number
  /** The batch is one suspect event, claimed alone. */
  suspect: boolean
  /** The lowest id among the claimed fresh events (neither retried nor suspect), if any. */
  firstFreshId: string | undefined
}

type MeasuredRow = Omit<ClaimedRow, 'payload'> & { payload: string | null; size: number; part: 's' | 'r' | 'f' }

/**
 * Claim a batch: BEGIN (with the batch's settings) and the claim go out together (one round trip).
 * `connection` must be a pool of exactly one connection, so that BEGIN, the claim and the settlement share it.
 * When the claim had to lock rows past the byte budget (rare: big rows), a second round trip rolls back,
 * freeing every row, and locks again only those within the budget, so no row sits locked unclaimed.
 */
export async function outboxClaimBatch(connection: Sql, queries: ClaimQueries, limits: ClaimLimits): Promise<ClaimedBatch> {
  const begin = connection.unsafe(queries.begin)
  const claim = connection.unsafe<MeasuredRow[]>(queries.claim, [limits.batchSize, limits.maxBytes, limits.suspects, limits.fromId], { prepare: true })
  let [, rows] = await Promise.all([begin, claim, connection.unsafe(queries.afterClaim)])
  if (rows.length > 0 && rows.at(-1)!.payload === null) {
    const fits = rows.slice(0, -1)
    const [, , relocked] = await Promise.all([
      connection.unsafe('rollback'),
      connection.unsafe(queries.begin),
      connection.unsafe<Array<{ id: string }>>(queries.relock, [fits.map((row) => row.id), fits.map((row) => row.attempt - 1), ...createdRange(fits)], { prepare: true }),
      connection.unsafe(queries.afterClaim),
    ])
    const kept = new Set(relocked.map((row) => row.id))
    rows = fits.filter((row) => kept.has(row.id)) as typeof rows
  }
  return claimedBatch(rows, queries)
}

/**
 * The claim alone, in a transaction begun already and shared with other outboxes' claims (see
 * tenants/shared-turn.ts): sent at once, so claims issued one after another go out in one round trip.
 * Undefined when it locked rows past the byte budget: only a rollback frees those, so the caller rolls back.
 */
export async function outboxClaimShared(connection: Sql, queries: ClaimQueries, limits: ClaimLimits): Promise<ClaimedBatch | undefined> {
  const rows = await connection.unsafe<MeasuredRow[]>(queries.claim, [limits.batchSize, limits.maxBytes, limits.suspects, limits.fromId], { prepare: true }).execute()
  return rows.length > 0 && rows.at(-1)!.payload === null ? undefined : claimedBatch(rows, queries)
}

function claimedBatch(rows: MeasuredRow[], queries: ClaimQueries): ClaimedBatch {
  let bytes = 0
  for (const row of rows) bytes += row.size
  // fresh rows come last, in id order: the first is the lowest
  return { events: rows.map((row) => new ClaimedEvent(row as ClaimedRow, queries.schema)), bytes, suspect: rows[0]?.part === 's', firstFreshId: rows.find((row) => row.part === 'f')?.id }
}

/** Ends the batch transaction without settling: every claimed event returns to the queue as it was. */
export function outboxRollback(connection: Sql): Promise<unknown> {
  return connection.unsafe('rollback')
}
