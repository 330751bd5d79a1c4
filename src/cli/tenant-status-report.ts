import { type TenantsStatus, type TenantStatus, worstTenants } from '../ops/tenant-status.js'
import { formatSeconds, type StatusLimits } from './status-report.js'

/**
 * `status --schemas`: the totals (the layouts among them), the tenants not served, then the `top` worst tenants
 * by lag and by dead events, and the `top` whose partition upkeep lags, each with its warnings.
 */
export function formatTenantsStatus(status: TenantsStatus, patterns: readonly string[], top: number): string {
  const { totals } = status
  const row = (tenant: TenantStatus) => `  ${tenant.schema.padEnd(24)} pending ${String(tenant.pending).padStart(8)}  dead ${String(tenant.dead).padStart(6)}  lag ${formatSeconds(tenant.lagSeconds)}`
  const modes = new Map<string, TenantStatus[]>()
  for (const tenant of status.tenants) {
    const mode = tenant.ordering ?? 'not recorded yet'
    modes.set(mode, [...(modes.get(mode) ?? []), tenant])
  }
  const lines = [
    `${totals.tenants} tenant outboxes matching ${patterns.join(' ')}`,
    `  pending    ${totals.pending}`,
    `  dead       ${totals.dead}`,
    `  lag        ${formatSeconds(totals.maxLagSeconds)}  (oldest pending event of any tenant)`,
    `  ordering   ${[...modes].map(([mode, tenants]) => `${mode}: ${tenants.length}${modes.size > 1 && tenants.length <= 10 ? ` (${tenants.map((t) => t.schema).join(', ')})` : ''}`).join('; ') || '-'}`,
    `  layout     ${layoutTotals(totals.layouts)}`,
  ]
  if (status.withoutOutbox.length > 0) lines.push(`  no outbox  ${status.withoutOutbox.length}: ${status.withoutOutbox.slice(0, top).join(', ')}${status.withoutOutbox.length > top ? ', …' : ''} (not served: outbox-poller migrate --schemas)`)
  const byLag = worstTenants(status.tenants, 'lagSeconds', top)
  const byDead = worstTenants(status.tenants, 'dead', top)
  if (byLag.length > 0) lines.push(`worst ${byLag.length} by lag:`, ...byLag.map(row))
  if (byDead.length > 0) lines.push(`worst ${byDead.length} by dead events:`, ...byDead.map(row))
  const lagging = upkeepLagging(status.tenants)
  if (lagging.length > 0) {
    lines.push(`partition upkeep lags in ${lagging.length} tenant${lagging.length === 1 ? '' : 's'}:`)
    for (const tenant of lagging.slice(0, top)) lines.push(...tenant.layout.warnings.map((warning) => `  ${tenant.schema.padEnd(24)} ${warning}`))
    if (lagging.length > top) lines.push(`  … and ${lagging.length - top} more (--json lists all)`)
  }
  return `${lines.join('\n')}\n`
}

/** `plain 3; partitioned by day 2; upkeep lags in 1`: the counts that are not 0. */
function layoutTotals(layouts: TenantsStatus['totals']['layouts']): string {
  const parts = [
    ...(layouts.plain > 0 ? [`plain ${layouts.plain}`] : []),
    ...(layouts.day > 0 ? [`partitioned by day ${layouts.day}`] : []),
    ...(layouts.hour > 0 ? [`partitioned by hour ${layouts.hour}`] : []),
    ...(layouts.upkeepLagging > 0 ? [`upkeep lags in ${layouts.upkeepLagging}`] : []),
  ]
  return parts.join('; ') || '-'
}

/** The partitioned tenants with a layout warning, worst first: none for the current period, then the most events in the default partition. */
export function upkeepLagging(tenants: readonly TenantStatus[]): TenantStatus[] {
  const rank = (t: TenantStatus) => (t.layout.ahead < 0 ? 0 : 1)
  return tenants.filter((t) => t.layout.warnings.length > 0).sort((a, b) => rank(a) - rank(b) || b.layout.defaultRows - a.layout.defaultRows || a.layout.ahead - b.layout.ahead || a.schema.localeCompare(b.schema))
}

/** The limits the tenants exceed: the worst lag of any tenant, the dead events of all. */
export function tenantsStatusViolations(status: TenantsStatus, limits: StatusLimits): string[] {
  const violations: string[] = []
  const [worst] = worstTenants(status.tenants, 'lagSeconds', 1)
  if (limits.maxLagMs !== undefined && worst !== undefined && worst.lagSeconds * 1000 > limits.maxLagMs) {
    violations.push(`lag ${formatSeconds(worst.lagSeconds)} (${worst.schema}) exceeds --max-lag ${formatSeconds(limits.maxLagMs / 1000)}`)
  }
  if (limits.maxDead !== undefined && status.totals.dead > limits.maxDead) violations.push(`${status.totals.dead} dead events exceed --max-dead ${limits.maxDead}`)
  return violations
}
