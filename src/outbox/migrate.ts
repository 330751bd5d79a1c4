import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { type DatabaseIntrospector, Kysely, PostgresAdapter, sql as rawSql, type TableMetadata } from 'kysely'
import { type Migration, Migrator } from 'kysely/migration'
import { PostgresJSDialect } from 'kysely-postgres-js'
import type { Sql } from 'postgres'
import { ConfigError, errorMessage } from '../errors.js'
import { fillPlaceholders, type OutboxTable, outboxTable } from './outbox-table.js'
import { type IndexedOrdering, type OrderingIndexState, outboxCreateOrderingIndexes, outboxRecordedOrdering } from './ordering-index.js'
import { moveProcedure, outboxKindQuery, outboxPartitionBy, partitionBySettingQuery, type PartitionBy, partitionOutboxStatement } from './partition-layout.js'
import { outboxPartitionUpkeep, partitionsAhead, type UpkeepResult } from './partition-upkeep.js'

const bodyTag = '$outbox_poller_migration$'
const migrationsDirectory = fileURLToPath(new URL('../../sql/migrations/', import.meta.url))

export interface MigrateOptions {
  /** A postgres.js instance; not closed. */
  sql: Sql
  /** Default `public`. */
  schema?: string
  /** Default `outbox`. */
  table?: string
  /** Stop after this migration (e.g. `0003_ordering_and_emit`). Default: apply all. For staged upgrades. */
  target?: string
  /**
   * `entity` or `group`: also create the indexes that pollers with that `--ordering` need (see
   * `outboxCreateOrderingIndexes`); an outbox whose recorded ordering is one of them gets any it lacks without it.
   * Default: none.
   */
  ordering?: IndexedOrdering
  /**
   * Create the outbox range-partitioned on `created_at`, one partition per day or hour (see partition-layout.ts).
   * Only when this call creates the outbox: an existing plain outbox is refused (moving one is a procedure of
   * its own), an existing partitioned one must have been created with the same width. With `target` (at
   * 0003 or later), the outbox is partitioned after that migration and later ones run on the partitioned
   * table: how an upgrade test checks a new migration on this layout.
   */
  partitionBy?: PartitionBy
}

/** When this call applied 0007: the captured tables it gave the truncate trigger, and those it left without. */
export interface TruncateUpgrade {
  /** Tables captured with every row event, which now capture TRUNCATE as a new capture does. */
  attached: string[]
  /** Tables captured with an events subset, left as they were. */
  leftOut: string[]
}

export interface MigrateResult {
  /** Names of the migrations applied by this call (empty when already up to date). */
  applied: string[]
  /**
   * With `ordering`, or on an outbox recorded as ordered: whether the ordering indexes were all there (`exists`) or
   * some were created (`created concurrently` if any was built so); each index's state in `orderingIndexes`.
   */
  orderingIndex?: OrderingIndexState
  orderingIndexes?: Array<{ index: string; state: OrderingIndexState }>
  /** The ordering those indexes serve: the one asked for, else the one the outbox records. */
  ordering?: IndexedOrdering
  /** Present when this call applied `0007_capture_truncate`. */
  truncateUpgrade?: TruncateUpgrade
  /** On a partitioned outbox: its width, and the partitions this call created ahead (or could not). */
  partitions?: { by: PartitionBy } & UpkeepResult
}

const truncateMigration = '0007_capture_truncate'

/** Kysely's migration lock key: held by our migrations and the application's Kysely migrations alike, and by older versions' session locks. */
const migrationLockKey = '3853314791062309107'

/** The migrator runs in a transaction that already holds the migration lock: it takes and releases none of its own. */
class LockHeldAdapter extends PostgresAdapter {
  override async acquireMigrationLock(): Promise<void> {}
  override async releaseMigrationLock(): Promise<void> {}
}

class LockHeldDialect extends PostgresJSDialect {
  readonly #schema: string

  constructor(config: ConstructorParameters<typeof PostgresJSDialect>[0], schema: string) {
    super(config)
    this.#schema = schema
  }

  override createAdapter(): PostgresAdapter {
    return new LockHeldAdapter()
  }

  override createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new OwnSchemaIntrospector(db, this.#schema)
  }
}

/**
 * What the migrator asks the catalog (does the schema exist, do its bookkeeping tables), asked of the
 * outbox's schema alone. Kysely's own introspector reads every column of every table of every schema, each
 * call: with thousands of tenant schemas every migrate would read them all (`migrate --schemas` grew with the
 * square of the tenants), and a schema dropped meanwhile (a tenant being deleted) failed the migration.
 */
class OwnSchemaIntrospector implements DatabaseIntrospector {
  constructor(
    private readonly db: Kysely<any>,
    private readonly schema: string,
  ) {}

  async getSchemas(): Promise<Array<{ name: string }>> {
    const { rows } = await rawSql<{ name: string }>`select nspname as name from pg_catalog.pg_namespace where nspname = ${this.schema}`.execute(this.db)
    return rows
  }

  async getTables(): Promise<TableMetadata[]> {
    const { rows } = await rawSql<{ name: string; kind: string }>`
      select c.relname as name, c.relkind as kind from pg_catalog.pg_class as c join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
       where n.nspname = ${this.schema} and c.relkind in ('r', 'v', 'p', 'f')`.execute(this.db)
    return rows.map((row) => ({ name: row.name, schema: this.schema, isView: row.kind === 'v', isForeign: row.kind === 'f', columns: [] }))
  }
}

/**
 * Applies the pending files of sql/migrations/ in order, in one transaction that first takes the migration
 * advisory lock, so replicas that start together migrate once. A transaction-level lock, not Kysely's
 * session-level one: it holds behind a pooler in transaction mode too (a session lock would stay with
 * whatever server session ran it). Bookkeeping lives in `<table>_poller_migration` in the outbox's schema,
 * apart from the application's own Kysely migrations.
 */
export async function migrate(options: MigrateOptions): Promise<MigrateResult> {
  const outbox = outboxTable(options.schema ?? 'public', options.table ?? 'outbox')
  const db = new Kysely<unknown>({ dialect: new LockHeldDialect({ postgres: options.sql }, outbox.schema) })
  const applied = await db.transaction().execute(async (trx) => {
    await rawSql`select pg_advisory_xact_lock(${rawSql.lit(migrationLockKey)}::bigint)`.execute(trx)
    const { rows } = await rawSql.raw<{ kind: string }>(outboxKindQuery(outbox)).execute(trx)
    const creates = rows.length === 0
    if (options.partitionBy !== undefined && !creates) {
      const by = rows[0]!.kind === 'p' ? ((await rawSql.raw<{ by: PartitionBy }>(partitionBySettingQuery(outbox)).execute(trx)).rows[0]!.by) : undefined
      checkLayout(outbox, by, options.partitionBy)
    }
    const names = await migrateLocked(trx, options)
    // The frozen migrations create a plain table; an outbox this transaction created is rebuilt partitioned before anyone sees it.
    if (options.partitionBy !== undefined && creates) {
      // the layout is recorded in the settings table, which 0003 creates (a staged creation may stop later, not earlier)
      const { rows: settings } = await rawSql<{ exists: boolean }>`select to_regclass(${outbox.settings}) is not null as exists`.execute(trx)
      if (!settings[0]!.exists) throw new ConfigError('a partitioned outbox is created at 0003_ordering_and_emit or later: its layout is recorded in the settings table')
      await rawSql.raw(partitionOutboxStatement(outbox, options.partitionBy, partitionsAhead[options.partitionBy])).execute(trx)
    }
    return names
  })
  const result: MigrateResult = { applied }
  const by = await outboxPartitionBy(options.sql, outbox)
  if (by !== undefined) result.partitions = { by, ...(await outboxPartitionUpkeep(options.sql, outbox, by)) }
  if (applied.includes(truncateMigration)) result.truncateUpgrade = await truncateUpgrade(options.sql, outbox)
  // after the commit: the indexes are on tables the transaction created, and a concurrent build runs outside any transaction
  // ordered pollers of this version need the barrier index too: an outbox already ordered gets it from a plain migrate
  const recorded = await outboxRecordedOrdering(options.sql, outbox)
  const ordering = options.ordering ?? (recorded === 'entity' || recorded === 'group' ? recorded : undefined)
  if (ordering !== undefined) {
    const states = await outboxCreateOrderingIndexes(options.sql, outbox, ordering)
    result.orderingIndexes = states
    result.ordering = ordering
    result.orderingIndex = states.some((s) => s.state === 'created concurrently') ? 'created concurrently' : states.some((s) => s.state === 'created') ? 'created' : 'exists'
  }
  return result
}

/** `--partition-by` on an outbox that exists: it must be partitioned, with that width. */
function checkLayout(outbox: OutboxTable, by: PartitionBy | undefined, wanted: PartitionBy): void {
  if (by === undefined) throw new ConfigError(`${outbox.qualified} exists as a plain table: --partition-by only applies when migrate creates the outbox; to move a plain outbox to a partitioned one, see the ${moveProcedure}`)
  if (by !== wanted) throw new ConfigError(`${outbox.qualified} is partitioned by ${by}, not ${wanted}: the width is chosen when the outbox is created`)
}

/** Right after 0007: which captured tables it gave the truncate trigger (see the end of that file). */
async function truncateUpgrade(sql: Sql, outbox: OutboxTable): Promise<TruncateUpgrade> {
  const rows = await sql<{ table: string; truncate: boolean }[]>`
    select r.relid::regclass::text as table, r.options -> 'events' ? 'truncate' as truncate
      from ${sql.unsafe(outbox.captured)} as r
     where exists (select 1 from pg_trigger t where t.tgrelid = r.relid and t.tgparentid = 0
                      and t.tgfoid in (${outbox.captureFunction}::regproc, ${outbox.captureRowsFunction}::regproc))
     order by 1`
  return { attached: rows.filter((row) => row.truncate).map((row) => row.table), leftOut: rows.filter((row) => !row.truncate).map((row) => row.table) }
}

async function migrateLocked(db: Kysely<unknown>, options: MigrateOptions): Promise<string[]> {
  const outbox = outboxTable(options.schema ?? 'public', options.table ?? 'outbox')
  const migrator = new Migrator({
    db,
    provider: { getMigrations: () => loadMigrations((text) => fillPlaceholders(text, outbox)) },
    migrationTableSchema: outbox.schema,
    migrationTableName: outbox.migrationTable,
    migrationLockTableName: `${outbox.migrationTable}_lock`,
  })
  const { error, results } = options.target === undefined ? await migrator.migrateToLatest() : await migrator.migrateTo(options.target)
  if (error !== undefined) {
    const failed = results?.find((result) => result.status === 'Error')
    throw new Error(`migration ${failed?.migrationName ?? ''} failed: ${errorMessage(error)}`, { cause: error })
  }
  return (results ?? []).filter((result) => result.status === 'Success').map((result) => result.migrationName)
}

/**
 * The migration files (frozen: they never import app code). Kysely's driver sends one statement per
 * query, so a file runs as one plpgsql EXECUTE, which accepts several statements in one string.
 */
async function loadMigrations(fill: (text: string) => string): Promise<Record<string, Migration>> {
  const files = (await readdir(migrationsDirectory)).filter((name) => name.endsWith('.sql')).sort()
  const migrations: Record<string, Migration> = {}
  for (const file of files) {
    const text = fill(await readFile(migrationsDirectory + file, 'utf8'))
    if (text.includes(bodyTag)) throw new Error(`migration ${file} must not contain ${bodyTag}`)
    const statement = `DO $outbox_poller_do$ BEGIN EXECUTE ${bodyTag}${text}${bodyTag}; END $outbox_poller_do$`
    migrations[file.replace(/\.sql$/, '')] = { up: (db) => rawSql.raw(statement).execute(db).then(() => undefined) }
  }
  return migrations
}
