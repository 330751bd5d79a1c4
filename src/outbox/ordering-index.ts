import type { Sql } from 'postgres'
import { ConfigError } from '../errors.js'
import { type OutboxTable, quoteIdent } from './outbox-table.js'

/** From this size on, the ordering indexes are built concurrently, so writers never wait for the build. */
const concurrentBuildBytes = 16 * 1024 * 1024

export type OrderingIndexState = 'exists' | 'created' | 'created concurrently'

/**
 * The indexes an ordered claim probes: the `(entity_type, entity_id, id)` index of pending events (an entity's
 * head), and the `(entity_type, id)` index of pending `<entity_type>.truncated` events (the barriers of an entity
 * type, see claim.ts). The second holds only truncations, so it is nearly always empty; its predicate still costs
 * every insert a comparison, which is why neither exists where no poller orders.
 */
function orderingIndexes(outbox: OutboxTable): Array<{ qualified: string; name: string; definition: string }> {
  return [
    { qualified: outbox.entityPendingIndex, name: `${outbox.table}_entity_pending`, definition: '(entity_type, entity_id, id) where processed_at is null' },
    { qualified: outbox.truncatedPendingIndex, name: `${outbox.table}_truncated_pending`, definition: `(entity_type, id) where processed_at is null and ${truncatedCondition('')}` },
  ]
}

/** SQL: the event (of the given alias, '' for none) is a `.truncated` one, written as the barrier index's predicate is. */
export function truncatedCondition(alias: string): string {
  const column = (name: string) => (alias === '' ? name : `${alias}.${name}`)
  return `${column('event_type')} = ${column('entity_type')} || '.truncated'`
}

/**
 * Creates the indexes that `--ordering entity` claims probe, where the outbox lacks them. Only the outbox's owner
 * can: the pollers' role never does. On a large outbox the build is concurrent (no lock that stops writers); an
 * invalid index left by an interrupted concurrent build is rebuilt. `exists` when both were there.
 */
export async function outboxCreateOrderingIndex(sql: Sql, outbox: OutboxTable): Promise<OrderingIndexState> {
  let state: OrderingIndexState = 'exists'
  for (const index of orderingIndexes(outbox)) {
    const [found] = await sql<{ valid: boolean }[]>`select i.indisvalid as valid from pg_index i where i.indexrelid = to_regclass(${index.qualified})`
    if (found?.valid) continue
    const [size] = await sql<{ bytes: string }[]>`select pg_relation_size(${outbox.qualified}::regclass)::text as bytes`
    const concurrently = found !== undefined || Number(size!.bytes) >= concurrentBuildBytes
    if (found !== undefined) await sql.unsafe(`drop index concurrently if exists ${index.qualified}`)
    await sql.unsafe(`create index ${concurrently ? 'concurrently ' : ''}if not exists ${quoteIdent(index.name)} on ${outbox.qualified} ${index.definition}`)
    if (state !== 'created concurrently') state = concurrently ? 'created concurrently' : 'created'
  }
  return state
}

/** `--ordering entity` needs both indexes: without them every ordered claim would scan the pending events once per candidate. */
export async function outboxCheckOrderingIndex(sql: Sql, outbox: OutboxTable): Promise<void> {
  for (const index of orderingIndexes(outbox)) {
    const [found] = await sql<{ valid: boolean }[]>`select i.indisvalid as valid from pg_index i where i.indexrelid = to_regclass(${index.qualified})`
    if (found?.valid) continue
    throw new ConfigError(
      `--ordering entity needs the index ${index.qualified}, which this outbox ${found ? 'has only half-built (an interrupted build)' : 'lacks'}: ` +
        `run \`outbox-poller migrate --ordering entity\` as the outbox's owner first`,
    )
  }
}
