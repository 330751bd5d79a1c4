import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { describeTarget, waitForDatabase } from '../database/connect.js'
import { startEmbeddedPostgres } from '../database/embedded-postgres.js'
import { quoteIdent } from '../outbox/outbox-table.js'
import { defaults } from '../poller/poller-options.js'

/** A place for `demo` and `bench` to work in, and to clean up after. */
export interface ScratchDatabase {
  url: string
  /** A schema of its own: the outbox and the sample tables live here. */
  schema: string
  /** What it runs on, for reports: `embedded PostgreSQL 18.4` or `host:port/db`. */
  description: string
  /** Drops the schema and those named `<schema>_…` (DATABASE_URL), or stops the embedded server. */
  close(): Promise<void>
}

/**
 * With a connection string: a fresh schema in that database, dropped at the end. Without: an embedded
 * PostgreSQL (real server binaries from the npm registry) in a temporary directory, torn down at the end.
 */
export async function openScratchDatabase(purpose: string, url?: string, postgresFlags?: string[]): Promise<ScratchDatabase> {
  const schema = `outbox_${purpose}_${randomBytes(4).toString('hex')}`
  if (url) {
    const sql = postgres(url, { max: 1, onnotice: () => {} })
    try {
      await waitForDatabase(sql, describeTarget(url), defaults.connectTimeoutMs)
      await sql.unsafe(`create schema ${quoteIdent(schema)}`)
      const [{ version }] = await sql<{ version: string }[]>`select current_setting('server_version') as version`
      return {
        url,
        schema,
        description: `PostgreSQL ${version} at ${describeTarget(url)}`,
        close: async () => {
          const admin = postgres(url, { max: 1, onnotice: () => {} })
          // and the schemas named after it (bench --tenants makes one per tenant)
          const own = await admin<{ name: string }[]>`select nspname as name from pg_namespace where nspname = ${schema} or starts_with(nspname, ${`${schema}_`})`
          for (const { name } of own) await admin.unsafe(`drop schema if exists ${quoteIdent(name)} cascade`)
          await admin.end()
        },
      }
    } finally {
      await sql.end()
    }
  }
  const embedded = await startEmbeddedPostgres({ postgresFlags })
  const sql = postgres(embedded.url, { max: 1, onnotice: () => {} })
  const [{ version }] = await sql<{ version: string }[]>`select current_setting('server_version') as version`
  await sql.unsafe(`create schema ${quoteIdent(schema)}`)
  await sql.end()
  return { url: embedded.url, schema, description: `embedded PostgreSQL ${version}`, close: embedded.stop }
}
