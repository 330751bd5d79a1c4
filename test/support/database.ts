import { randomBytes } from 'node:crypto'
import postgres, { type Sql } from 'postgres'
import { inject } from 'vitest'
import { captureTable } from '../../src/capture/capture.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { parsePartitionBy } from '../../src/outbox/partition-layout.js'

/** OUTBOX_TEST_PARTITION_BY=day|hour: the test databases' outboxes are created partitioned (npm test runs the layout-sensitive files both ways). */
export const testPartitionBy = parsePartitionBy(process.env.OUTBOX_TEST_PARTITION_BY || undefined, 'OUTBOX_TEST_PARTITION_BY')

export interface TestDatabase {
  /** Connection string of this file's own database. */
  url: string
  /** A pool on it. */
  sql: Sql
  /** Drops the database (closing every connection to it). */
  drop(): Promise<void>
}

/** Creates a fresh database for one test file and migrates the default outbox into it (`ordering`: with the indexes that ordering needs; partitioned as OUTBOX_TEST_PARTITION_BY says). */
export async function createTestDatabase(options: { migrate?: boolean; ordering?: 'entity' | 'group' } = {}): Promise<TestDatabase> {
  const adminUrl = inject('adminDatabaseUrl')
  const name = `outbox_test_${randomBytes(6).toString('hex')}`
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database ${name}`)
  const url = withDatabase(adminUrl, name)
  const sql = postgres(url, { max: 5, onnotice: () => {} })
  if (options.migrate !== false) await migrate({ sql, ordering: options.ordering, partitionBy: testPartitionBy })
  return {
    url,
    sql,
    async drop() {
      await sql.end({ timeout: 5 })
      await admin.unsafe(`drop database if exists ${name} with (force)`)
      await admin.end({ timeout: 5 })
    },
  }
}

/**
 * Stands for a database a suite creates later, in its beforeAll: a suite can hand it out when the file
 * loads (tests may destructure it), and it is usable from the first test on.
 */
export function laterDatabase(current: () => TestDatabase | undefined): TestDatabase {
  return {
    get url() {
      return current()!.url
    },
    get sql() {
      return current()!.sql
    },
    drop: () => current()!.drop(),
  }
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

/** The table most process tests write to: `items (id, name)`, captured as entity `item` into public.outbox. */
export async function createItemsTable(db: TestDatabase): Promise<void> {
  await db.sql`create table items (id int primary key, name text)`
  await captureTable(db.sql, outboxTable('public', 'outbox'), { table: 'items', entity: 'item' })
}
