import type { Sql, TransactionSql } from 'postgres'
import { ConfigError } from '../errors.js'
import { type OutboxTable, quoteIdent } from './outbox-table.js'
import { outboxIsPartitioned } from './partition-layout.js'
import { defaultLockRetry, withLockRetries } from './partition-upkeep.js'

/** From this size on, an ordering index is built concurrently, so writers never wait for the build. */
const concurrentBuildBytes = 16 * 1024 * 1024

export type OrderingIndexState = 'exists' | 'created' | 'created concurrently'

/** An ordering mode that claims heads, and so needs indexes of pending events to find them. */
export type IndexedOrdering = 'entity' | 'group'

interface OrderingIndex {
  /** Qualified. */
  qualified: string
  name: string
  definition: string
}

/**
 * The indexes an ordering's head checks probe: `entity` one `(entity_type, entity_id, id)` of pending events,
 * `group` that one too (an entity's events stay in order across a change of group, and events without a group are
 * ordered by entity) and `(hash of group_key, id)` of pending events that have a group (a hash: a group value of any
 * length fits in the index, where the value itself past 2,704 bytes would fail the capturing write). Both also the `(entity_type, id)`
 * index of pending `<entity_type>.truncated` events (the barriers of an entity type, see claim.ts): it holds only
 * truncations, so it is nearly always empty; its predicate still costs every insert a comparison, which is why
 * none of these exists where no poller orders.
 */
function orderingIndexes(outbox: OutboxTable, ordering: IndexedOrdering): OrderingIndex[] {
  const entity = { qualified: outbox.entityPendingIndex, name: `${outbox.table}_entity_pending`, definition: '(entity_type, entity_id, id) where processed_at is null' }
  const truncated = { qualified: outbox.truncatedPendingIndex, name: `${outbox.table}_truncated_pending`, definition: `(entity_type, id) where processed_at is null and ${truncatedCondition('')}` }
  const group = { qualified: outbox.groupPendingIndex, name: `${outbox.table}_group_pending`, definition: `(${groupHash('group_key')}, id) where processed_at is null and group_key is not null` }
  return ordering === 'entity' ? [entity, truncated] : [entity, truncated, group]
}

/** SQL: the hash of a group key that the group index holds (the claim compares it, then the value). */
export function groupHash(column: string): string {
  return `hashtextextended(${column}, 0)`
}

/** SQL: the event (of the given alias, '' for none) is a `.truncated` one, written as the barrier index's predicate is. */
export function truncatedCondition(alias: string): string {
  const column = (name: string) => (alias === '' ? name : `${alias}.${name}`)
  return `${column('event_type')} = ${column('entity_type')} || '.truncated'`
}

/**
 * Creates the indexes that `--ordering <ordering>` claims probe, where the outbox lacks them, and returns each one's
 * state (entity index first). Only the outbox's owner can: the pollers' role never does. On a large outbox the build
 * is concurrent (no lock that stops writers; on a partitioned outbox partition by partition); an invalid index left
 * by an interrupted concurrent build is rebuilt.
 */
export async function outboxCreateOrderingIndexes(sql: Sql, outbox: OutboxTable, ordering: IndexedOrdering): Promise<Array<{ index: string; state: OrderingIndexState }>> {
  const states: Array<{ index: string; state: OrderingIndexState }> = []
  for (const index of orderingIndexes(outbox, ordering)) states.push({ index: index.qualified, state: await createIndex(sql, outbox, index) })
  return states
}

async function createIndex(sql: Sql, outbox: OutboxTable, index: OrderingIndex): Promise<OrderingIndexState> {
  const found = await indexValidity(sql, index.qualified)
  if (found?.valid) return 'exists'
  // a partitioned outbox's size is its partitions'
  const [size] = await sql<{ bytes: string }[]>`select coalesce(sum(pg_relation_size(relid)), 0)::text as bytes from pg_partition_tree(${outbox.qualified}::regclass) where isleaf`
  const concurrently = found !== undefined || Number(size!.bytes) >= concurrentBuildBytes
  if (concurrently && (await outboxIsPartitioned(sql, outbox))) {
    await createPartitionedConcurrently(sql, outbox, index)
    return 'created concurrently'
  }
  if (found !== undefined) await sql.unsafe(`drop index concurrently if exists ${index.qualified}`)
  await sql.unsafe(`create index ${concurrently ? 'concurrently ' : ''}if not exists ${quoteIdent(index.name)} on ${outbox.qualified} ${index.definition}`)
  return concurrently ? 'created concurrently' : 'created'
}

/**
 * PostgreSQL 15 builds no index concurrently on a partitioned table, so: the outbox's index alone (`ON ONLY`,
 * invalid and empty), then each partition's concurrently, attached to it; the outbox's index turns valid once every
 * partition's is attached. Taken up where it stopped: a partition whose index is attached is skipped, another's
 * leftover is dropped and rebuilt. The two statements on the outbox itself take a lock writers wait for, so they run
 * with a short lock_timeout, tried again, as partition upkeep does. Partitions attached later get the index from the
 * outbox's (ATTACH PARTITION builds it).
 */
async function createPartitionedConcurrently(sql: Sql, outbox: OutboxTable, index: OrderingIndex): Promise<void> {
  const retried = async (statement: string) => {
    if (!(await withLockRetries(sql, defaultLockRetry, async (tx) => void (await tx.unsafe(statement))))) {
      throw new Error(`${statement.split(' (')[0]}: its lock was not granted within ${defaultLockRetry.lockTimeoutMs} ms in ${defaultLockRetry.attempts} tries (a long transaction on the outbox?): run migrate again`)
    }
  }
  await retried(`create index if not exists ${quoteIdent(index.name)} on only ${outbox.qualified} ${index.definition}`)
  const suffix = index.name.slice(outbox.table.length)
  const unindexed = await sql<Array<{ name: string }>>`
    select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
     where i.inhparent = ${outbox.qualified}::regclass
       and not exists (select 1 from pg_inherits a join pg_index x on x.indexrelid = a.inhrelid where a.inhparent = ${index.qualified}::regclass and x.indrelid = c.oid)
     order by c.relname`
  for (const { name } of unindexed) {
    const partitionIndex = `${quoteIdent(outbox.schema)}.${quoteIdent(name + suffix)}`
    await sql.unsafe(`drop index concurrently if exists ${partitionIndex}`)
    await sql.unsafe(`create index concurrently ${quoteIdent(name + suffix)} on ${quoteIdent(outbox.schema)}.${quoteIdent(name)} ${index.definition}`)
    await retried(`alter index ${index.qualified} attach partition ${partitionIndex}`)
  }
}

/** The ordering the outbox records (its first replica's `--ordering`); undefined before any is recorded. */
export async function outboxRecordedOrdering(sql: Sql | TransactionSql, outbox: OutboxTable): Promise<string | undefined> {
  // a staged migration may stop before 0003, which creates the settings table
  const [settings] = await sql<{ exists: boolean }[]>`select to_regclass(${outbox.settings}) is not null as exists`
  if (!settings!.exists) return undefined
  const [row] = await sql<{ ordering: string | null }[]>`
    select (select split_part(value, ',', 1) from ${sql.unsafe(outbox.settings)} where name = 'ordering') as ordering`
  return row!.ordering ?? undefined
}

/** An ordering index the outbox has and its recorded ordering never probes. */
export interface UnusedOrderingIndex {
  index: string
  /** The ordering that probes it. */
  serves: IndexedOrdering
  /** The ordering the outbox records. */
  recorded: string
  /** The statement that drops it, for the outbox's owner (a partitioned index cannot be dropped concurrently). */
  drop: string
}

/**
 * The ordering indexes left from an ordering the outbox no longer records (its setting deleted, replicas restarted
 * without it): each still costs every captured write its entry, and `migrate` never drops one. None while no ordering
 * is recorded: indexes built by `migrate --ordering` before the first ordered replica starts are not unused.
 */
export async function outboxUnusedOrderingIndexes(sql: Sql | TransactionSql, outbox: OutboxTable, partitioned: boolean): Promise<UnusedOrderingIndex[]> {
  const recorded = await outboxRecordedOrdering(sql, outbox)
  if (recorded === undefined) return []
  const probed = new Set(recorded === 'entity' || recorded === 'group' ? orderingIndexes(outbox, recorded).map((index) => index.qualified) : [])
  const byEntity = new Set(orderingIndexes(outbox, 'entity').map((index) => index.qualified))
  const unused: UnusedOrderingIndex[] = []
  for (const { qualified } of orderingIndexes(outbox, 'group')) {
    if (probed.has(qualified) || (await indexValidity(sql, qualified)) === undefined) continue
    unused.push({ index: qualified, serves: byEntity.has(qualified) ? 'entity' : 'group', recorded, drop: `DROP INDEX ${partitioned ? '' : 'CONCURRENTLY '}${qualified}` })
  }
  return unused
}

/** Whether the index exists (undefined: it does not) and is valid (false: an interrupted concurrent build). */
async function indexValidity(sql: Sql | TransactionSql, qualified: string): Promise<{ valid: boolean } | undefined> {
  const [found] = await sql<{ valid: boolean }[]>`select i.indisvalid as valid from pg_index i where i.indexrelid = to_regclass(${qualified})`
  return found
}

/** An ordering index the outbox lacks (or has half-built): the replica refuses that outbox until `migrate` builds it. */
export class OrderingIndexMissing extends ConfigError {
  override name = 'OrderingIndexMissing'
}

/**
 * An ordered claim needs its indexes: without them every claim would scan the pending events once per candidate.
 * `target` is how the suggested `migrate` names this outbox (`--schema tenant_b` for one tenant of many).
 */
export async function outboxCheckOrderingIndex(sql: Sql, outbox: OutboxTable, ordering: IndexedOrdering, target?: string): Promise<void> {
  for (const index of orderingIndexes(outbox, ordering)) {
    const found = await indexValidity(sql, index.qualified)
    if (found?.valid) continue
    throw new OrderingIndexMissing(
      `--ordering ${ordering} needs the index ${index.qualified}, which this outbox ${found ? 'has only half-built (an interrupted build)' : 'lacks'}: ` +
        `run \`outbox-poller migrate${target === undefined ? '' : ` ${target}`} --ordering ${ordering}\` as the outbox's owner first`,
    )
  }
}
