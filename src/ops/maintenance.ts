import type { Sql } from 'postgres'
import { holdsSnapshot } from '../database/vacuum-horizon.js'
import { outboxOwned } from '../outbox/outbox-checks.js'
import { quoteIdent, type OutboxTable } from '../outbox/outbox-table.js'
import { churnEntries, freshIndexBytes, indexBloated, steadyIndexBytes, type InsertChurn } from './index-bloat.js'
import { indexPagesInUse } from './index-usage.js'

/**
 * The partial indexes over pending events, with the predicate each is built on, the width of its key, and how many
 * fresh builds of the entries inserted between two VACUUMs its steady state holds (`churn`, see index-bloat.ts): 0 for
 * those an insert does not enter; 2 for those in id order, since a page VACUUM empties is reused only once no
 * snapshot from before can reach it, in practice after the next VACUUM (measured on PostgreSQL 15: two intervals'
 * inserts); 4 for those in entity or group order, whose inserts split pages anywhere, leaving two half full.
 * Every processed event leaves a dead entry in them; VACUUM frees those pages for reuse but never gives them back,
 * so after a snapshot was held for minutes (see the README's "Long transactions") they stay many times the size
 * they need.
 */
function pendingIndexes(outbox: OutboxTable): Array<{ name: string; predicate: string; keyBytes: string; churn: 0 | 2 | 4 }> {
  return [
    { name: `${outbox.table}_pending`, predicate: 'processed_at is null and dead_at is null and retry_at is null', keyBytes: '8', churn: 2 },
    { name: `${outbox.table}_retry`, predicate: 'processed_at is null and dead_at is null and retry_at is not null', keyBytes: '8', churn: 0 },
    { name: `${outbox.table}_suspect`, predicate: 'processed_at is null and dead_at is null and suspect', keyBytes: '8', churn: 0 },
    // text keys: their mean stored size, from a sample
    { name: `${outbox.table}_entity_pending`, predicate: 'processed_at is null', keyBytes: '8 + coalesce((select avg(pg_column_size(entity_type) + pg_column_size(entity_id)) from (select entity_type, entity_id from $table where processed_at is null limit 1000) as s), 0)', churn: 4 },
    // an upper bound: events without a group do not enter it
    { name: `${outbox.table}_group_pending`, predicate: 'processed_at is null and group_key is not null', keyBytes: '8 + coalesce((select avg(pg_column_size(group_key)) from (select group_key from $table where processed_at is null and group_key is not null limit 1000) as s), 0)', churn: 4 },
  ]
}

export { bloatFactor, bloatMinBytes } from './index-bloat.js'
/** A snapshot older than this (s) would hold the rebuild until it ends, and keep it bloated too: skip then. */
export const reindexSnapshotLimitSeconds = 60

export interface ReindexResult {
  /** Indexes rebuilt, with their sizes before and after (bytes). */
  rebuilt: Array<{ index: string; bytesBefore: number; bytesAfter: number }>
  /** Why nothing was rebuilt although an index was bloated; undefined otherwise. */
  skipped: string | undefined
}

export interface MaintenanceResult extends ReindexResult {
  /** VACUUM ran: the space of the deleted rows is reusable at once. */
  vacuumed: boolean
}

/**
 * What `cleanup` does after its deletes, as the outbox's owner: VACUUM the outbox (so the deleted rows' space
 * is reused at once, not after autovacuum's next turn), then rebuild its bloated pending indexes. A role that
 * does not own the outbox gets `notOwner` and nothing is done (PostgreSQL would skip the VACUUM with a warning).
 */
export async function outboxMaintenance(sql: Sql, outbox: OutboxTable): Promise<MaintenanceResult | 'notOwner'> {
  if (!(await outboxOwned(sql, outbox))) return 'notOwner'
  // before the VACUUM, which resets them and frees the pages: the inserts its pending indexes had to hold since the
  // previous one, and the pages they used for it (with pgstattuple)
  const churn = await insertChurn(sql, outbox)
  const used = await indexPagesInUse(sql, (await existingPendingIndexes(sql, outbox)).flatMap(({ built }) => built.map(({ index }) => index)))
  await sql.unsafe(`vacuum ${outbox.qualified}`)
  return { vacuumed: true, ...(await outboxReindexBloated(sql, outbox, { churn, usedPages: used })) }
}

/**
 * Rebuilds, with REINDEX CONCURRENTLY (pollers and writers go on), the outbox's pending indexes that are
 * bloated: more than `bloatFactor` × the size of a fresh build for the entries they hold, and, for those every insert
 * enters, the entries inserted between two VACUUMs (`churn`, per table, as `insertChurn` measured it before the
 * last VACUUM; measured now when not given), or, where given, the pages each used before that VACUUM
 * (`usedPages`, by index; see steadyIndexBytes). On a partitioned outbox each partition's index is weighed and rebuilt
 * on its own. Needs the outbox's owner; a rebuild that fails leaves an invalid copy, dropped here before the error
 * is passed on.
 */
export async function outboxReindexBloated(sql: Sql, outbox: OutboxTable, options: { snapshotLimitSeconds?: number; churn?: Map<string, InsertChurn>; usedPages?: Map<string, number> } = {}): Promise<ReindexResult> {
  const snapshotLimitSeconds = options.snapshotLimitSeconds ?? reindexSnapshotLimitSeconds
  const churn = options.churn ?? (await insertChurn(sql, outbox))
  const bloated: Array<{ index: string; bytes: number }> = []
  for (const { index, built: builtList } of await existingPendingIndexes(sql, outbox)) {
    for (const { index: built, table } of builtList) {
      const [row] = await sql.unsafe<Array<{ bytes: string | null; entries: string; key_bytes: string }>>(`
        select pg_relation_size(to_regclass($1)) as bytes, count(*) as entries, (${index.keyBytes.replace('$table', table)})::float8 as key_bytes
          from ${table} where to_regclass($1) is not null and ${index.predicate}`, [built])
      const bytes = Number(row!.bytes)
      const inserts = churn.get(table)
      const entries = Number(row!.entries)
      const churnBytes = freshIndexBytes(entries + (inserts === undefined ? 0 : index.churn * churnEntries(inserts)), Number(row!.key_bytes))
      const used = options.usedPages?.get(built)
      const steady = steadyIndexBytes(churnBytes, freshIndexBytes(entries, Number(row!.key_bytes)), used === undefined ? undefined : used * 8192)
      if (indexBloated(bytes, steady)) bloated.push({ index: built, bytes })
    }
  }
  if (bloated.length === 0) return { rebuilt: [], skipped: undefined }
  // only this database's snapshots hold back its VACUUM and REINDEX CONCURRENTLY
  const [oldest] = await sql<Array<{ pid: number; seconds: number }>>`
    select pid, extract(epoch from now() - xact_start)::float8 as seconds from pg_stat_activity
     where datname = current_database() and pid <> pg_backend_pid() and xact_start is not null and ${sql.unsafe(holdsSnapshot)}
     order by xact_start limit 1`
  if (oldest !== undefined && oldest.seconds > snapshotLimitSeconds) {
    return { rebuilt: [], skipped: `a snapshot ${Math.round(oldest.seconds)} s old (pid ${oldest.pid}) is held: a rebuild would wait for it, and stay bloated` }
  }
  const rebuilt: ReindexResult['rebuilt'] = []
  for (const { index, bytes } of bloated) {
    try {
      await sql.unsafe(`reindex index concurrently ${index}`)
    } catch (error) {
      await dropInvalidCopies(sql, outbox)
      throw error
    }
    const [after] = await sql.unsafe<Array<{ bytes: string }>>('select pg_relation_size($1::regclass) as bytes', [index])
    rebuilt.push({ index, bytesBefore: bytes, bytesAfter: Number(after!.bytes) })
  }
  return { rebuilt, skipped: undefined }
}

/**
 * The outbox's pending indexes that exist (the entity and group indexes exist only for ordered pollers; asked first,
 * since an outbox migrated before 0008 has no group_key column to name), each with the indexes that hold its entries.
 */
async function existingPendingIndexes(sql: Sql, outbox: OutboxTable): Promise<Array<{ index: ReturnType<typeof pendingIndexes>[number]; built: Array<{ index: string; table: string }> }>> {
  const found: Array<{ index: ReturnType<typeof pendingIndexes>[number]; built: Array<{ index: string; table: string }> }> = []
  for (const index of pendingIndexes(outbox)) {
    const qualified = `${quoteIdent(outbox.schema)}.${quoteIdent(index.name)}`
    const [exists] = await sql<Array<{ found: boolean }>>`select to_regclass(${qualified}) is not null as found`
    if (exists!.found) found.push({ index, built: await builtIndexes(sql, qualified) })
  }
  return found
}

/**
 * Per table that holds the outbox's rows (the outbox, or each partition), named as `builtIndexes` names it: the rows
 * inserted since its last VACUUM, by its statistics (none where track_counts is off).
 */
export async function insertChurn(sql: Sql, outbox: OutboxTable): Promise<Map<string, InsertChurn>> {
  const rows = await sql<Array<{ table: string; inserted: string; seconds: number | null; auto: boolean; naptime: number }>>`
    select '"' || replace(schemaname, '"', '""') || '"."' || replace(relname, '"', '""') || '"' as table, n_ins_since_vacuum::text as inserted,
           extract(epoch from now() - greatest(last_vacuum, last_autovacuum))::float8 as seconds,
           coalesce(last_autovacuum > last_vacuum or last_vacuum is null, false) as auto,
           (select setting::float8 from pg_settings where name = 'autovacuum_naptime') as naptime
      from pg_stat_user_tables
     where relid = to_regclass(${outbox.qualified}) or relid in (select inhrelid from pg_inherits where inhparent = to_regclass(${outbox.qualified}))`
  return new Map(rows.map((row) => [row.table, { inserted: Number(row.inserted), secondsSinceVacuum: row.seconds ?? undefined, autovacuum: row.auto, naptimeSeconds: row.naptime }]))
}

/**
 * The indexes that hold the entries of the outbox's index `qualified`, each with its table: the index itself on a
 * plain outbox; on a partitioned one each partition's (the outbox's own index holds no page, and PostgreSQL 15
 * rebuilds a partition's index concurrently, not the outbox's).
 */
async function builtIndexes(sql: Sql, qualified: string): Promise<Array<{ index: string; table: string }>> {
  return sql<Array<{ index: string; table: string }>>`
    select '"' || replace(n.nspname, '"', '""') || '"."' || replace(c.relname, '"', '""') || '"' as index, '"' || replace(tn.nspname, '"', '""') || '"."' || replace(t.relname, '"', '""') || '"' as table
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      join pg_index x on x.indexrelid = c.oid
      join pg_class t on t.oid = x.indrelid join pg_namespace tn on tn.oid = t.relnamespace
     where (c.oid = to_regclass(${qualified}) and c.relkind = 'i')
        or c.oid in (select inhrelid from pg_inherits where inhparent = to_regclass(${qualified}))
     order by t.relname`
}

/** REINDEX CONCURRENTLY interrupted leaves `<index>_ccnew` (invalid, still maintained by every write): drop it. */
async function dropInvalidCopies(sql: Sql, outbox: OutboxTable): Promise<void> {
  const leftovers = await sql<Array<{ name: string }>>`
    select c.relname as name from pg_index i join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = ${outbox.schema} and not i.indisvalid and c.relname like '%\_ccnew%'
       and (i.indrelid = to_regclass(${outbox.qualified}) or i.indrelid in (select inhrelid from pg_inherits where inhparent = to_regclass(${outbox.qualified})))`
  for (const { name } of leftovers) await sql.unsafe(`drop index concurrently if exists ${quoteIdent(outbox.schema)}.${quoteIdent(name)}`)
}
