import type { Sql, TransactionSql } from 'postgres'
import { type OutboxTable, quoteIdent, quoteLiteral } from './outbox-table.js'
import { defaultPartition, type PartitionBy } from './partition-layout.js'

/** Partitions kept ready past the current one: two days, or 26 hours, more than the daily cleanup timer needs. Each partition costs every claim a lock and an index probe: no more. */
export const partitionsAhead: Record<PartitionBy, number> = { day: 2, hour: 26 }

const periodMs: Record<PartitionBy, number> = { day: 86_400_000, hour: 3_600_000 }

/** How long one try of partition DDL waits for its lock, and how often it tries (see withLockRetries). */
export interface LockRetry {
  lockTimeoutMs: number
  attempts: number
  /** Pause before the next try (doubles up to 8 ×). */
  pauseMs: number
}

export const defaultLockRetry: LockRetry = { lockTimeoutMs: 200, attempts: 30, pauseMs: 250 }

/** One range partition: [from, to) in UTC. */
export interface PartitionRange {
  name: string
  /** `"schema"."name"` */
  qualified: string
  from: Date
  to: Date
}

/** The start of the period holding `at` (UTC). */
export function periodStart(at: Date, by: PartitionBy): Date {
  return new Date(Math.floor(at.getTime() / periodMs[by]) * periodMs[by])
}

/** The partition for the period starting at `from`: `<table>_p20261202` (day) or `<table>_p2026120214` (hour). */
export function partitionRange(outbox: OutboxTable, by: PartitionBy, from: Date): PartitionRange {
  const iso = from.toISOString()
  const stamp = iso.slice(0, 4) + iso.slice(5, 7) + iso.slice(8, 10) + (by === 'hour' ? iso.slice(11, 13) : '')
  const name = `${outbox.table}_p${stamp}`
  return { name, qualified: `${quoteIdent(outbox.schema)}.${quoteIdent(name)}`, from, to: new Date(from.getTime() + periodMs[by]) }
}

/** The partitions that should exist at `now`: the current period's and `partitionsAhead` after it. */
export function wantedPartitions(outbox: OutboxTable, by: PartitionBy, now: Date): PartitionRange[] {
  const first = periodStart(now, by).getTime()
  return Array.from({ length: partitionsAhead[by] + 1 }, (_, i) => partitionRange(outbox, by, new Date(first + i * periodMs[by])))
}

/**
 * Creates one range partition without a strong lock on the outbox: a standalone table first (LIKE the outbox,
 * with the default partition's storage parameters), then ATTACH, which takes SHARE UPDATE EXCLUSIVE on the
 * outbox (writers and batches go on) and ACCESS EXCLUSIVE only on the default partition, which it checks
 * holds no row of the range. The outbox's indexes are built on the (empty) table as it is attached.
 */
export async function createPartition(tx: TransactionSql, outbox: OutboxTable, range: PartitionRange): Promise<void> {
  const [options] = await tx.unsafe<Array<{ with: string }>>(
    `select coalesce(' with (' || array_to_string(reloptions, ', ') || ')', '') as with from pg_class where oid = $1::regclass`,
    [defaultPartition(outbox)],
  )
  await tx.unsafe(`create table ${range.qualified} (like ${outbox.qualified} including defaults including constraints including storage including compression)${options?.with ?? ''}`)
  for (const { statement } of await tx.unsafe<Array<{ statement: string }>>(partitionGrantsQuery(outbox, range.qualified))) await tx.unsafe(statement)
  await tx.unsafe(
    `alter table ${outbox.qualified} attach partition ${range.qualified} for values from (${quoteLiteral(range.from.toISOString())}) to (${quoteLiteral(range.to.toISOString())})`,
  )
}

/**
 * The GRANTs that give a new partition the privileges others hold on the outbox (one statement per grantee): a
 * poller role reads and locks the partition its claims read directly (claim-partition.ts) with its own rights
 * on it, which PostgreSQL does not take from the parent.
 */
function partitionGrantsQuery(outbox: OutboxTable, partition: string): string {
  return `select format('GRANT %s ON %s TO %s', string_agg(a.privilege_type, ', ' order by a.privilege_type), ${quoteLiteral(partition)},
                        case when a.grantee = 0 then 'PUBLIC' else quote_ident(r.rolname) end) as statement
            from pg_class as c cross join lateral aclexplode(c.relacl) as a left join pg_roles as r on r.oid = a.grantee
           where c.oid = ${quoteLiteral(outbox.qualified)}::regclass and a.grantee <> c.relowner
           group by a.grantee, r.rolname`
}

/** `lock_not_available`: lock_timeout expired. */
function isLockTimeout(error: unknown): boolean {
  return (error as { code?: string }).code === '55P03'
}

/**
 * Runs partition DDL in its own transaction with a short lock_timeout, again after a pause when the lock was
 * not granted in time: a DDL lock request that waits queues every later request for the table behind it, so
 * waiting behind a long batch would stall the writers; giving up after `lockTimeoutMs` stalls them no longer.
 * Returns false when every try timed out.
 */
export async function withLockRetries(sql: Sql, retry: LockRetry, work: (tx: TransactionSql) => Promise<void>): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    try {
      await sql.begin(async (tx) => {
        await tx.unsafe(`set local lock_timeout = ${Math.trunc(retry.lockTimeoutMs)}`)
        await work(tx)
      })
      return true
    } catch (error) {
      if (!isLockTimeout(error)) throw error
      if (attempt >= retry.attempts) return false
      await new Promise((resolve) => setTimeout(resolve, retry.pauseMs * Math.min(8, 2 ** (attempt - 1)) * (0.5 + Math.random())))
    }
  }
}

export interface UpkeepResult {
  created: string[]
  /** Partitions not created, each with why (the default partition holds rows of its range; its lock was never granted). */
  skipped: Array<{ name: string; reason: string }>
}

/**
 * Creates the partitions missing from `wantedPartitions` (existing names are kept as they are), each with
 * `withLockRetries`. A range some rows of the default partition fall in is skipped, said so: those rows stay
 * in the default partition, claimed and cleaned up like any other, and the range is created once they are gone.
 */
export async function outboxPartitionUpkeep(sql: Sql, outbox: OutboxTable, by: PartitionBy, retry: LockRetry = defaultLockRetry): Promise<UpkeepResult> {
  const [clock] = await sql<Array<{ now: Date }>>`select now()`
  const result: UpkeepResult = { created: [], skipped: [] }
  for (const range of wantedPartitions(outbox, by, clock!.now)) {
    const [exists] = await sql<Array<{ exists: boolean }>>`select to_regclass(${range.qualified}) is not null as exists`
    if (exists!.exists) continue
    const [inDefault] = await sql.unsafe<Array<{ found: boolean }>>(
      `select exists (select 1 from ${defaultPartition(outbox)} where created_at >= $1 and created_at < $2) as found`,
      [range.from, range.to],
    )
    if (inDefault!.found) {
      result.skipped.push({ name: range.name, reason: 'the default partition holds rows of its range (they are claimed and cleaned up there)' })
      continue
    }
    let done: boolean
    try {
      done = await withLockRetries(sql, retry, (tx) => createPartition(tx, outbox, range))
    } catch (error) {
      // check_violation: a row of the range reached the default partition since the look above
      if ((error as { code?: string }).code !== '23514') throw error
      result.skipped.push({ name: range.name, reason: 'the default partition holds rows of its range (they are claimed and cleaned up there)' })
      continue
    }
    if (done) result.created.push(range.name)
    else result.skipped.push({ name: range.name, reason: `its lock was not granted within ${retry.lockTimeoutMs} ms in ${retry.attempts} tries (a long transaction on the outbox?): the next upkeep tries again` })
  }
  return result
}
