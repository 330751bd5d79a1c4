import type { Sql, TransactionSql } from 'postgres'
import { type OutboxTable, quoteLiteral } from '../outbox/outbox-table.js'
import { outboxIsPartitioned, type PartitionBy, partitionBySettingQuery } from '../outbox/partition-layout.js'
import { partitionsAhead, periodStart } from '../outbox/partition-upkeep.js'

/** The outbox's layout as `status` shows it. */
export interface OutboxLayout {
  /** `null`: a plain table. */
  partitionBy: PartitionBy | null
  /** Range partitions (the default partition not counted). */
  partitions: number
  /** Where the newest range partition ends: a write with a later `created_at` lands in the default partition. */
  newestEndsAt: Date | null
  /** Range partitions after the current period's, back to back from it; -1: none holds the current period. */
  ahead: number
  /** Rows in the default partition (writes no range partition took), counted up to `defaultRowsCap`. */
  defaultRows: number
  /** Upkeep not running, rows in the default partition: one phrase each. */
  warnings: string[]
}

/** The default partition's rows are counted up to this many: it should be near empty, and counting is a scan of it. */
export const defaultRowsCap = 100_000

/**
 * Fewer partitions ahead than this means no upkeep ran for a day: a daily cleanup leaves `partitionsAhead` and,
 * a day later, just before its next run, a day's worth fewer (1 day, or 2 hours).
 */
export const partitionsAheadWarnBelow: Record<PartitionBy, number> = {
  day: partitionsAhead.day - 1,
  hour: partitionsAhead.hour - 24,
}

/** A range partition's bounds, ms since the epoch. */
export interface RangeBounds {
  from: number
  to: number
}

/**
 * SQL: the range partitions' bounds (`from`, `to`) read from the catalog, with `where` choosing the parents
 * (`i.inhparent`). The default partition has no bounds and is left out. `pg_get_expr(…, 0)`: a bound names no
 * column, so no partition is opened (nor locked, nor loaded into a fresh connection's cache) to print it.
 */
export function rangeBoundsSelect(where: string): string {
  return `select b[1]::timestamptz as from, b[2]::timestamptz as to
            from pg_inherits as i join pg_class as c on c.oid = i.inhrelid,
                 regexp_match(pg_get_expr(c.relpartbound, 0), 'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') as b
           where ${where} and b is not null`
}

/**
 * SQL: the rows of the outbox outside every range (before the first, in a gap, after the last: the default
 * partition's own constraint), which the executor prunes to the default partition, up to `defaultRowsCap`.
 * Through the outbox itself, so the pollers' grants suffice. `ranges` in order.
 */
export function defaultRowsCount(outbox: OutboxTable, ranges: readonly RangeBounds[]): string {
  const at = (ms: number) => quoteLiteral(new Date(ms).toISOString())
  const outside = ranges.length === 0 ? 'true' : [
    `created_at < ${at(ranges[0]!.from)}`,
    ...ranges.slice(1).flatMap((r, i) => (r.from > ranges[i]!.to ? [`(created_at >= ${at(ranges[i]!.to)} and created_at < ${at(r.from)})`] : [])),
    `created_at >= ${at(Math.max(...ranges.map((r) => r.to)))}`,
  ].join(' or ')
  return `(select count(*) from (select from ${outbox.qualified} where ${outside} limit ${defaultRowsCap}) as d)::int`
}

/**
 * The width a partitioned outbox's range partitions span, for an outbox whose `partition_by` setting was
 * deleted (as partitionBySettingQuery falls back to).
 */
export function widthOfRanges(ranges: readonly RangeBounds[]): PartitionBy {
  return ranges.length > 0 && Math.max(...ranges.map((r) => r.to - r.from)) <= 3_600_000 ? 'hour' : 'day'
}

/**
 * The layout of the outbox at `at`. Reads only the catalog and, through the outbox itself (so the pollers' grants
 * suffice), the rows outside every range partition's bounds, which the executor prunes to the default partition.
 */
export async function outboxLayout(sql: Sql | TransactionSql, outbox: OutboxTable, at: Date): Promise<OutboxLayout> {
  if (!(await outboxIsPartitioned(sql, outbox))) return plainLayout()
  const [setting] = await sql.unsafe<Array<{ by: PartitionBy }>>(partitionBySettingQuery(outbox))
  const ranges = (await sql.unsafe<Array<{ from: Date; to: Date }>>(`${rangeBoundsSelect(`i.inhparent = ${quoteLiteral(outbox.qualified)}::regclass`)} order by 1`))
    .map((r) => ({ from: r.from.getTime(), to: r.to.getTime() }))
  const [counted] = await sql.unsafe<Array<{ rows: number }>>(`select ${defaultRowsCount(outbox, ranges)} as rows`)
  return partitionedLayout(setting!.by, ranges, counted!.rows, at)
}

/** A plain table's layout. */
export function plainLayout(): OutboxLayout {
  return { partitionBy: null, partitions: 0, newestEndsAt: null, ahead: 0, defaultRows: 0, warnings: [] }
}

/** A partitioned outbox's layout at `at`, from its range partitions (in order) and its default partition's rows. */
export function partitionedLayout(by: PartitionBy, ranges: readonly RangeBounds[], defaultRows: number, at: Date): OutboxLayout {
  let cursor = periodStart(at, by).getTime()
  let ahead = -1
  for (const range of ranges) {
    if (range.from !== cursor) continue
    cursor = range.to
    ahead++
  }
  const layout: OutboxLayout = {
    partitionBy: by,
    partitions: ranges.length,
    newestEndsAt: ranges.length === 0 ? null : new Date(Math.max(...ranges.map((r) => r.to))),
    ahead,
    defaultRows,
    warnings: [],
  }
  if (layout.defaultRows > 0) {
    const rows = layout.defaultRows >= defaultRowsCap ? `at least ${defaultRowsCap}` : String(layout.defaultRows)
    layout.warnings.push(`the default partition holds ${rows} events that found no partition (is partition upkeep running? run cleanup as the outbox's owner)`)
  }
  if (ahead < partitionsAheadWarnBelow[by]) {
    const have = ahead < 0 ? `no partition for the current ${by}` : `${ahead} partition${ahead === 1 ? '' : 's'} ahead`
    layout.warnings.push(`${have}, fewer than ${partitionsAheadWarnBelow[by]} (upkeep keeps ${partitionsAhead[by]}; has cleanup not run as the outbox's owner for a day?)`)
  }
  return layout
}
