import type { Sql } from 'postgres'
import { type OutboxOrdering, orderingSetting } from '../outbox/outbox-checks.js'
import { outboxTenantsStatus, type TenantStatus } from '../ops/tenant-status.js'

/** Why a matching schema is not served, as `outbox_tenants_not_served` names it. */
export const tenantProblems = ['no outbox', 'ordering differs', 'ordering indexes missing'] as const

/** The backlog of every tenant a multi-tenant replica serves, and the matching schemas it does not serve. */
export interface TenantBacklog {
  tenants: TenantStatus[]
  notServed: Array<{ schema: string; problem: (typeof tenantProblems)[number] }>
}

/**
 * `outboxTenantBacklog`: what the backlog gauges show with `schemas`, in the few statements of `status
 * --schemas` (each a union over up to 200 tenants), however many tenants: one sample every 10 s, not a query
 * per tenant. A tenant whose recorded ordering differs from this replica's, or that lacks the indexes this
 * replica's ordering needs, is not served (the poller refuses it): counted apart, its backlog is not this replica's.
 */
export async function outboxTenantBacklog(sql: Sql, patterns: readonly string[], table: string, order: OutboxOrdering): Promise<TenantBacklog> {
  const status = await outboxTenantsStatus(sql, patterns, table)
  const mine = orderingSetting(order)
  const notServed: TenantBacklog['notServed'] = status.withoutOutbox.map((schema) => ({ schema, problem: 'no outbox' }))
  const tenants: TenantStatus[] = []
  for (const tenant of status.tenants) {
    // the poller checks the indexes first, then the mode; no mode recorded yet: the first poller to serve it records its own
    if (!indexedFor(tenant, order.ordering)) notServed.push({ schema: tenant.schema, problem: 'ordering indexes missing' })
    else if (tenant.ordering !== null && tenant.ordering !== mine) notServed.push({ schema: tenant.schema, problem: 'ordering differs' })
    else tenants.push(tenant)
  }
  return { tenants, notServed }
}

/** Whether the tenant's outbox has the indexes `ordering` needs. */
function indexedFor(tenant: TenantStatus, ordering: OutboxOrdering['ordering']): boolean {
  return ordering === 'none' || tenant.indexedFor === 'group' || tenant.indexedFor === ordering
}
