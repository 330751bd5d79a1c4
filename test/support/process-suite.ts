import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll } from 'vitest'
import { pendingCondition } from '../../src/outbox/outbox-table.js'
import { killReplicas, type Replica, startReplica } from './cli.js'
import { createItemsTable, createTestDatabase, laterDatabase, type TestDatabase } from './database.js'
import { waitFor } from './wait-for.js'

/** What a test file that spawns the CLI works with, usable from the first test on. */
export interface ProcessSuite {
  /** The file's own database, with the captured `items` table unless asked otherwise. */
  readonly db: TestDatabase
  /** A temporary directory for the handlers' record files, removed after the file. */
  readonly directory: string
  /** Starts the CLI against the file's database; it is killed after the test if still running. */
  start(args: string[], env?: Record<string, string>): Replica
}

export interface ProcessSuiteOptions {
  /** Create and capture `items (id, name)`. Default true. */
  items?: boolean
  /** More setup once the database exists (tables of the file's own). */
  setup?: (db: TestDatabase) => Promise<void>
  /** Tables emptied after each test, then the outbox. Default `items` (none without items). */
  truncate?: string
  /** After each test, also wait until no `outbox-poller/…` connection is left (a killed supervisor's worker exits by itself). */
  awaitDisconnect?: boolean
}

/**
 * Registers the hooks every process test file needs: its database and directory before, its replicas killed
 * and its tables emptied after each test, everything removed after the file.
 */
export function processSuite(name: string, options: ProcessSuiteOptions = {}): ProcessSuite {
  const items = options.items ?? true
  const replicas: Replica[] = []
  let db: TestDatabase | undefined
  let directory: string | undefined
  beforeAll(async () => {
    db = await createTestDatabase()
    directory = await mkdtemp(join(tmpdir(), `outbox-${name}-`))
    if (items) await createItemsTable(db)
    await options.setup?.(db)
  })
  afterEach(async () => {
    await killReplicas(replicas)
    if (options.awaitDisconnect) await waitFor('no poller connections left', async () => (await pollerConnections(db!)) === 0, 15_000)
    // the outbox last, on its own: a captured table's TRUNCATE writes its .truncated event
    const tables = options.truncate ?? (items ? 'items' : undefined)
    await db!.sql.unsafe(`${tables === undefined ? '' : `truncate ${tables}; `}truncate outbox`)
  })
  afterAll(async () => {
    await db?.drop()
    if (directory !== undefined) await rm(directory, { recursive: true, force: true })
  })
  return {
    db: laterDatabase(() => db),
    get directory() {
      return directory!
    },
    start(args, env = {}) {
      const replica = startReplica(args, { DATABASE_URL: db!.url, ...env })
      replicas.push(replica)
      return replica
    },
  }
}

/** Connections of outbox-poller processes to the database. */
export async function pollerConnections(db: TestDatabase): Promise<number> {
  const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name like 'outbox-poller/%'`
  return row!.n
}

/** Transactions open and idle in the database: a batch whose handlers are running, or one a dead replica left. */
export async function idleTransactions(db: TestDatabase): Promise<number> {
  const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where datname = current_database() and state = 'idle in transaction'`
  return row!.n
}

/** Events neither processed nor dead. */
export async function pendingEvents(db: TestDatabase): Promise<number> {
  const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from outbox where ${db.sql.unsafe(pendingCondition)}`
  return row!.n
}
