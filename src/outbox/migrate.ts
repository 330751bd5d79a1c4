import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { type DatabaseIntrospector, Kysely, PostgresAdapter, sql as rawSql, type TableMetadata } from 'kysely'
import { type Migration, Migrator } from 'kysely/migration'
import { PostgresJSDialect } from 'kysely-postgres-js'
import type { Sql } from 'postgres'
import { errorMessage } from '../errors.js'
import { fillPlaceholders, outboxTable } from './outbox-table.js'
import { type OrderingIndexState, outboxCreateOrderingIndex } from './ordering-index.js'

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
  /** `entity`: also create the index that `--ordering entity` pollers need (see `outboxCreateOrderingIndex`). Default: none. */
  ordering?: 'entity'
}

export interface MigrateResult {
  /** Names of the migrations applied by this call (empty when already up to date). */
  applied: string[]
  /** With `ordering: 'entity'`: whether the ordering index was there or was created. */
  orderingIndex?: OrderingIndexState
}

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
  const db = new Kysely<unknown>({ dialect: new LockHeldDialect({ postgres: options.sql }, options.schema ?? 'public') })
  const applied = await db.transaction().execute(async (trx) => {
    await rawSql`select pg_advisory_xact_lock(${rawSql.lit(migrationLockKey)}::bigint)`.execute(trx)
    return migrateLocked(trx, options)
  })
  if (options.ordering !== 'entity') return { applied }
  // after the commit: the index is on tables the transaction created, and a concurrent build runs outside any transaction
  const outbox = outboxTable(options.schema ?? 'public', options.table ?? 'outbox')
  return { applied, orderingIndex: await outboxCreateOrderingIndex(options.sql, outbox) }
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
