import type { Sql } from 'postgres'
import { ConfigError } from '../errors.js'
import { type OutboxTable, quoteIdent } from './outbox-table.js'

/** From this size on, the ordering index is built concurrently, so writers never wait for the build. */
const concurrentBuildBytes = 16 * 1024 * 1024

export type OrderingIndexState = 'exists' | 'created' | 'created concurrently'

/**
 * Creates the `(entity_type, entity_id, id)` index of pending events that `--ordering entity` claims probe, if the
 * outbox lacks it. Only the outbox's owner can: the pollers' role never does. On a large outbox the build is
 * concurrent (no lock that stops writers); an invalid index left by an interrupted concurrent build is rebuilt.
 */
export async function outboxCreateOrderingIndex(sql: Sql, outbox: OutboxTable): Promise<OrderingIndexState> {
  const [index] = await sql<{ valid: boolean }[]>`select i.indisvalid as valid from pg_index i where i.indexrelid = to_regclass(${outbox.entityPendingIndex})`
  if (index?.valid) return 'exists'
  const [size] = await sql<{ bytes: string }[]>`select pg_relation_size(${outbox.qualified}::regclass)::text as bytes`
  const concurrently = index !== undefined || Number(size!.bytes) >= concurrentBuildBytes
  if (index !== undefined) await sql.unsafe(`drop index concurrently if exists ${outbox.entityPendingIndex}`)
  await sql.unsafe(
    `create index ${concurrently ? 'concurrently ' : ''}if not exists ${quoteIdent(`${outbox.table}_entity_pending`)} on ${outbox.qualified} (entity_type, entity_id, id) where processed_at is null`,
  )
  return concurrently ? 'created concurrently' : 'created'
}

/** `--ordering entity` needs the index: without it every ordered claim would scan the pending events once per candidate. */
export async function outboxCheckOrderingIndex(sql: Sql, outbox: OutboxTable): Promise<void> {
  const [index] = await sql<{ valid: boolean }[]>`select i.indisvalid as valid from pg_index i where i.indexrelid = to_regclass(${outbox.entityPendingIndex})`
  if (index?.valid) return
  throw new ConfigError(
    `--ordering entity needs the index ${outbox.entityPendingIndex}, which this outbox ${index ? 'has only half-built (an interrupted build)' : 'lacks'}: ` +
      `run \`outbox-poller migrate --ordering entity\` as the outbox's owner first`,
  )
}
