import type { Sql, TransactionSql } from 'postgres'
import { type OutboxTable, quoteIdent } from '../outbox/outbox-table.js'
import { defaultLockRetry, type LockRetry, withLockRetries } from '../outbox/partition-upkeep.js'

export interface PartitionRetention {
  /** Processed events processed before this may go. */
  processedBefore: Date
  /** Dead events dead before this may go; undefined: a partition holding any dead event is kept. */
  deadBefore: Date | undefined
}

export interface DroppedPartitions {
  /** Partitions dropped, with their estimated rows (pg_class.reltuples, null before the first ANALYZE: a count would read them) and size. */
  dropped: Array<{ name: string; rows: number | null; bytes: number }>
  /** Partitions that could go but whose lock was not granted in time (the next cleanup tries again). */
  busy: string[]
}

/**
 * Drops the range partitions of a partitioned outbox that hold nothing cleanup would keep: their range ended
 * before the processed cut-off, no event in them is pending or waiting for a retry, every processed event was
 * processed before the cut-off and every dead one (if any) died before the dead cut-off. A DROP writes almost no
 * WAL and leaves no dead rows, where a DELETE writes and then vacuums every row. The default partition is never
 * dropped. Each drop takes ACCESS EXCLUSIVE on the outbox for an instant: it runs with `withLockRetries` (a short
 * lock_timeout, tried again), and checks the partition again under that lock, so an event that arrived or was
 * retried since the first look keeps it. Partitions this leaves are cleaned by the chunked deletes.
 */
export async function outboxDropDonePartitions(sql: Sql, outbox: OutboxTable, retention: PartitionRetention, retry: LockRetry = defaultLockRetry): Promise<DroppedPartitions> {
  const result: DroppedPartitions = { dropped: [], busy: [] }
  const partitions = await sql<Array<{ name: string; upper: Date | null; rows: number | null; bytes: number }>>`
    select c.relname as name, case when c.reltuples >= 0 then c.reltuples::float8 end as rows, pg_total_relation_size(c.oid)::float8 as bytes,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz as upper
      from pg_inherits as i join pg_class as c on c.oid = i.inhrelid
     where i.inhparent = ${outbox.qualified}::regclass and pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
     order by upper`
  for (const partition of partitions) {
    if (partition.upper === null || partition.upper > retention.processedBefore) continue
    const qualified = `${quoteIdent(outbox.schema)}.${quoteIdent(partition.name)}`
    if (!(await done(sql, qualified, retention))) continue
    let dropped = false
    const granted = await withLockRetries(sql, retry, async (tx) => {
      await tx.unsafe(`lock table only ${outbox.qualified} in access exclusive mode`)
      if (!(await done(tx, qualified, retention))) return
      await tx.unsafe(`drop table ${qualified}`)
      dropped = true
    })
    if (!granted) result.busy.push(partition.name)
    else if (dropped) result.dropped.push({ name: partition.name, rows: partition.rows, bytes: partition.bytes })
  }
  return result
}

/** Whether nothing in the partition is kept: each test one probe of a partial index of the partition. */
async function done(sql: Sql | TransactionSql, partition: string, retention: PartitionRetention): Promise<boolean> {
  const [row] = await sql.unsafe<Array<{ kept: boolean }>>(
    `select exists (select 1 from ${partition} where processed_at is null and dead_at is null and retry_at is null)
         or exists (select 1 from ${partition} where processed_at is null and dead_at is null and retry_at is not null)
         or exists (select 1 from ${partition} where processed_at is not null and processed_at >= $1)
         or exists (select 1 from ${partition} where dead_at is not null and ($2::timestamptz is null or dead_at >= $2)) as kept`,
    [retention.processedBefore, retention.deadBefore ?? null],
  )
  return !row!.kept
}
