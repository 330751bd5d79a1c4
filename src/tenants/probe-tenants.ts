import type { Sql } from 'postgres'
import { type OutboxTable, quoteLiteral } from '../outbox/outbox-table.js'

/**
 * Outboxes per statement. The tenants with work wait for each statement (sent between two turns): over 200
 * outboxes one took a loaded server 60–180 ms, over 50 about as long as a turn (10–30 ms).
 */
export const probeChunk = 50

/**
 * `outboxProbeTenants`: which of these outboxes have an event a claim could take now (fresh, or a retry or
 * suspect that is due), as schema names: the safety poll of the idle tenants, a few statements however many
 * tenants, instead of one claim transaction per tenant. Each test is an index probe of the claim's own partial
 * indexes. Rows locked by another replica count as claimable (a claim finds out, at the cost of one empty claim).
 * A statement that fails (a tenant dropped under it) names all of its tenants, so each one's own claim finds out.
 */
export async function outboxProbeTenants(sql: Sql, outboxes: readonly OutboxTable[]): Promise<Set<string>> {
  const claimable = new Set<string>()
  for (let from = 0; from < outboxes.length; from += probeChunk) {
    const part = outboxes.slice(from, from + probeChunk)
    const probes = part.map(
      (outbox) => `select ${quoteLiteral(outbox.schema)}::text as schema
        where exists (select 1 from ${outbox.qualified} where processed_at is null and dead_at is null and retry_at is null)
           or exists (select 1 from ${outbox.qualified} where processed_at is null and dead_at is null and retry_at is not null and retry_at <= now())`,
    )
    try {
      for (const row of await sql.unsafe<Array<{ schema: string }>>(probes.join('\nunion all\n'))) claimable.add(row.schema)
    } catch {
      for (const outbox of part) claimable.add(outbox.schema)
    }
  }
  return claimable
}
