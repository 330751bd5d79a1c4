import type { Sql } from 'postgres'
import { outboxTable, pendingCondition, quoteLiteral } from '../outbox/outbox-table.js'
import { outboxDiscoverSchemas } from '../tenants/discover-tenants.js'
import { defaultRowsCount, type OutboxLayout, partitionedLayout, plainLayout, type RangeBounds, rangeBoundsSelect, widthOfRanges } from './partition-status.js'
import { type PartitionBy, partitionBySetting } from '../outbox/partition-layout.js'

/** One tenant's outbox, as `status --schemas` reports it. */
export interface TenantStatus {
  schema: string
  pending: number
  dead: number
  /** Age of the oldest pending event, seconds; 0 when none is pending. */
  lagSeconds: number
  /** The ordering mode its pollers recorded (see outboxCheckOrdering); null before the first poller. */
  ordering: string | null
  /** The orderings whose indexes the outbox has, valid (see ordering-index.ts): `group`'s include `entity`'s. */
  indexedFor: 'none' | 'entity' | 'group'
  /** Plain or partitioned, with its partitions ahead and default-partition events, as `status` shows one outbox's. */
  layout: OutboxLayout
}

export interface TenantsStatus {
  tenants: TenantStatus[]
  /** Matching schemas without an outbox (yet). */
  withoutOutbox: string[]
  totals: {
    tenants: number
    pending: number
    dead: number
    maxLagSeconds: number
    /** Tenants by layout; `upkeepLagging`: partitioned ones with a layout warning (see partitionedLayout). */
    layouts: { plain: number; day: number; hour: number; upkeepLagging: number }
  }
}

/**
 * Relations per query: a statement locks every relation it reads, each partition and its indexes included, so
 * its tenants are counted by their partitions (a plain outbox counts 1, one partitioned by hour 28) and a
 * statement stays within the lock table's share of one transaction (max_locks_per_transaction, 64 by default).
 */
const chunkWeight = 200

/** A schema dropped (or an outbox renamed) between finding the tenants and reading them: found again, up to this many times. */
const attempts = 3

/** SQLSTATEs of a relation or schema gone since the catalog was read. */
const undefinedTable = '42P01'
const invalidSchemaName = '3F000'

/**
 * `outboxTenantsStatus`: the backlog, dead events, lag, recorded ordering and layout of every matching schema's
 * outbox, a few statements in all, however many tenants: one catalog query for every partitioned outbox's
 * partitions, then unions over up to 200 tenants (fewer partitioned ones), every count an index scan or, for
 * the default partition's rows, a scan of that partition alone. A tenant dropped meanwhile is left out.
 */
export async function outboxTenantsStatus(sql: Sql, patterns: readonly string[], table: string, options: TenantsStatusOptions = {}): Promise<TenantsStatus> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await readTenantsStatus(sql, patterns, table, options.now)
    } catch (error) {
      const code = (error as { code?: string }).code
      if (attempt >= attempts || (code !== undefinedTable && code !== invalidSchemaName)) throw error
    }
  }
}

export interface TenantsStatusOptions {
  /** The moment the partitions ahead are counted from (default: the database's clock). */
  now?: Date
}

async function readTenantsStatus(sql: Sql, patterns: readonly string[], table: string, now: Date | undefined): Promise<TenantsStatus> {
  const found = await outboxDiscoverSchemas(sql, patterns, table)
  const served = found.filter((schema) => schema.hasOutbox && schema.current).map((schema) => schema.schema)
  const partitioned = await partitionedTenants(sql, served, table)
  const { ranges } = partitioned
  const at = now ?? partitioned.at
  const tenants: TenantStatus[] = []
  for (const chunk of chunks(served, (schema) => 1 + (ranges.get(schema)?.length ?? 0))) {
    const parts = chunk.map((schema) => {
      const t = outboxTable(schema, table)
      const partitioned = ranges.get(schema)
      return `select ${quoteLiteral(schema)}::text as schema,
                (select count(*) from ${t.qualified} where ${pendingCondition})::int as pending,
                (select count(*) from ${t.qualified} where dead_at is not null)::int as dead,
                coalesce(extract(epoch from now() - (select min(created_at) from ${t.qualified} where ${pendingCondition})), 0)::float8 as lag,
                (select value from ${t.settings} where name = 'ordering') as ordering,
                (select case when count(*) filter (where indexrelid <> ${regclass(t.groupPendingIndex)}) < 2 then 'none' when count(*) = 3 then 'group' else 'entity' end
                   from pg_index where indisvalid and indexrelid in (${regclass(t.entityPendingIndex)}, ${regclass(t.truncatedPendingIndex)}, ${regclass(t.groupPendingIndex)})) as indexed,
                ${partitioned === undefined ? 'null::text' : `(select value from ${t.settings} where name = ${quoteLiteral(partitionBySetting)})`} as partition_by,
                ${partitioned === undefined ? '0' : defaultRowsCount(t, partitioned)} as default_rows`
    })
    const rows = await sql.unsafe<TenantRow[]>(parts.join('\nunion all\n'))
    for (const row of rows) {
      const partitioned = ranges.get(row.schema)
      const layout = partitioned === undefined ? plainLayout() : partitionedLayout((row.partition_by as PartitionBy | null) ?? widthOfRanges(partitioned), partitioned, row.default_rows, at!)
      tenants.push({ schema: row.schema, pending: row.pending, dead: row.dead, lagSeconds: row.lag, ordering: row.ordering, indexedFor: row.indexed, layout })
    }
  }
  const totals: TenantsStatus['totals'] = { tenants: tenants.length, pending: 0, dead: 0, maxLagSeconds: 0, layouts: { plain: 0, day: 0, hour: 0, upkeepLagging: 0 } }
  for (const tenant of tenants) {
    totals.pending += tenant.pending
    totals.dead += tenant.dead
    totals.maxLagSeconds = Math.max(totals.maxLagSeconds, tenant.lagSeconds)
    totals.layouts[tenant.layout.partitionBy ?? 'plain']++
    if (tenant.layout.warnings.length > 0) totals.layouts.upkeepLagging++
  }
  return { tenants, withoutOutbox: found.filter((schema) => !schema.hasOutbox || !schema.current).map((schema) => schema.schema), totals }
}

interface TenantRow {
  schema: string
  pending: number
  dead: number
  lag: number
  ordering: string | null
  indexed: TenantStatus['indexedFor']
  partition_by: string | null
  default_rows: number
}

/**
 * The partitioned outboxes among `schemas`' and their range partitions (in order), in one catalog query, and the
 * database's clock they are placed against.
 */
async function partitionedTenants(sql: Sql, schemas: readonly string[], table: string): Promise<{ at: Date | undefined; ranges: Map<string, RangeBounds[]> }> {
  const rows = await sql.unsafe<Array<{ at: Date; schema: string; from: Date | null; to: Date | null }>>(
    `select now() as at, n.nspname as schema, r.from, r.to
       from pg_namespace as n join pg_class as p on p.relnamespace = n.oid and p.relname = $2 and p.relkind = 'p'
       left join lateral (${rangeBoundsSelect('i.inhparent = p.oid')}) as r on true
      where n.nspname = any($1::text[])
      order by 2, 3`,
    [schemas as string[], table],
  )
  const ranges = new Map<string, RangeBounds[]>()
  for (const row of rows) {
    const mine = ranges.get(row.schema) ?? []
    ranges.set(row.schema, mine)
    if (row.from !== null && row.to !== null) mine.push({ from: row.from.getTime(), to: row.to.getTime() })
  }
  return { at: rows[0]?.at, ranges }
}

/** `items` in order, cut into runs whose `weight` adds up to at most chunkWeight (an item heavier alone is a run alone). */
function chunks<T>(items: readonly T[], weight: (item: T) => number): T[][] {
  const runs: T[][] = []
  let run: T[] = []
  let sum = 0
  for (const item of items) {
    const w = weight(item)
    if (run.length > 0 && sum + w > chunkWeight) {
      runs.push(run)
      run = []
      sum = 0
    }
    run.push(item)
    sum += w
  }
  if (run.length > 0) runs.push(run)
  return runs
}

/** SQL: the oid of a qualified relation name, null where there is none. */
function regclass(qualified: string): string {
  return `coalesce(to_regclass(${quoteLiteral(qualified)}), 0)`
}

/** The `top` worst tenants by `key`, worst first, those with nothing to show left out. */
export function worstTenants(tenants: readonly TenantStatus[], key: 'lagSeconds' | 'dead', top: number): TenantStatus[] {
  return tenants.filter((tenant) => tenant[key] > 0).sort((a, b) => b[key] - a[key] || a.schema.localeCompare(b.schema)).slice(0, top)
}
