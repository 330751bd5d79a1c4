import type { Sql } from 'postgres'
import { outboxTable, pendingCondition, quoteLiteral } from '../outbox/outbox-table.js'
import { outboxDiscoverSchemas } from '../tenants/discover-tenants.js'

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
}

export interface TenantsStatus {
  tenants: TenantStatus[]
  /** Matching schemas without an outbox (yet). */
  withoutOutbox: string[]
  totals: { tenants: number; pending: number; dead: number; maxLagSeconds: number }
}

/** Tenants per query: one statement reads this many outboxes. */
const chunk = 200

/**
 * `outboxTenantsStatus`: the backlog, dead events, lag and recorded ordering of every matching schema's
 * outbox, a few statements in all (each a union over up to 200 tenants, every count an index scan).
 */
export async function outboxTenantsStatus(sql: Sql, patterns: readonly string[], table: string): Promise<TenantsStatus> {
  const found = await outboxDiscoverSchemas(sql, patterns, table)
  const served = found.filter((schema) => schema.hasOutbox && schema.current).map((schema) => schema.schema)
  const tenants: TenantStatus[] = []
  for (let from = 0; from < served.length; from += chunk) {
    const parts = served.slice(from, from + chunk).map((schema) => {
      const t = outboxTable(schema, table)
      return `select ${quoteLiteral(schema)}::text as schema,
                (select count(*) from ${t.qualified} where ${pendingCondition})::int as pending,
                (select count(*) from ${t.qualified} where dead_at is not null)::int as dead,
                coalesce(extract(epoch from now() - (select min(created_at) from ${t.qualified} where ${pendingCondition})), 0)::float8 as lag,
                (select value from ${t.settings} where name = 'ordering') as ordering,
                (select case when count(*) filter (where indexrelid <> ${regclass(t.groupPendingIndex)}) < 2 then 'none' when count(*) = 3 then 'group' else 'entity' end
                   from pg_index where indisvalid and indexrelid in (${regclass(t.entityPendingIndex)}, ${regclass(t.truncatedPendingIndex)}, ${regclass(t.groupPendingIndex)})) as indexed`
    })
    const rows = await sql.unsafe<Array<{ schema: string; pending: number; dead: number; lag: number; ordering: string | null; indexed: TenantStatus['indexedFor'] }>>(parts.join('\nunion all\n'))
    for (const row of rows) tenants.push({ schema: row.schema, pending: row.pending, dead: row.dead, lagSeconds: row.lag, ordering: row.ordering, indexedFor: row.indexed })
  }
  const totals = { tenants: tenants.length, pending: 0, dead: 0, maxLagSeconds: 0 }
  for (const tenant of tenants) {
    totals.pending += tenant.pending
    totals.dead += tenant.dead
    totals.maxLagSeconds = Math.max(totals.maxLagSeconds, tenant.lagSeconds)
  }
  return { tenants, withoutOutbox: found.filter((schema) => !schema.hasOutbox || !schema.current).map((schema) => schema.schema), totals }
}

/** SQL: the oid of a qualified relation name, null where there is none. */
function regclass(qualified: string): string {
  return `coalesce(to_regclass(${quoteLiteral(qualified)}), 0)`
}

/** The `top` worst tenants by `key`, worst first, those with nothing to show left out. */
export function worstTenants(tenants: readonly TenantStatus[], key: 'lagSeconds' | 'dead', top: number): TenantStatus[] {
  return tenants.filter((tenant) => tenant[key] > 0).sort((a, b) => b[key] - a[key] || a.schema.localeCompare(b.schema)).slice(0, top)
}
