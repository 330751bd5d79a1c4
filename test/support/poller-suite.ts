import { afterAll, afterEach, beforeAll, expect } from 'vitest'
import { createPoller } from '../../src/create-poller.js'
import { type Poller } from '../../src/poller/poller.js'
import { createItemsTable, createTestDatabase, laterDatabase, type TestDatabase } from './database.js'

export type PollerInput = Parameters<typeof createPoller>[0]

export interface PollerSuiteSetup {
  /** Create the captured `items` table (see createItemsTable). */
  items?: boolean
  /** More tables emptied after each test, besides `outbox` (and `items`). */
  truncate?: string[]
  /** Options every poller of the file starts with (after 20 ms – 200 ms polling intervals). */
  defaults?: Partial<PollerInput>
  /** More setup once the database exists; may return the connection string the pollers use instead of its own. */
  setup?: (db: TestDatabase) => Promise<string | void>
  /** More cleanup after the database is dropped. */
  teardown?: () => Promise<void>
}

export interface PollerSuite {
  /** The file's database (usable from the first test on). */
  db: TestDatabase
  /** A poller on the file's database with fast polling, stopped after each test. */
  startPoller(options: PollerInput): Poller
  /** Stops every poller started so far (each test's are stopped after it anyway). */
  stopPollers(): Promise<void>
  /** Events not processed yet, dead ones included. */
  unprocessed(): Promise<number>
  /** Events still to be handled: neither processed nor dead. */
  pending(): Promise<number>
}

/**
 * One database per test file, with the hooks every poller test needs: the database is created (and the
 * `items` table captured) before the tests, each test's pollers are stopped and the outbox emptied after it.
 */
export function pollerSuite(options: PollerSuiteSetup = {}): PollerSuite {
  let created: TestDatabase | undefined
  let connectionString: string | undefined
  const running = new Set<Poller>()
  const db = laterDatabase(() => created)
  const tables = [...(options.items ? ['items'] : []), ...(options.truncate ?? [])]

  beforeAll(async () => {
    created = await createTestDatabase()
    if (options.items) await createItemsTable(created)
    connectionString = (await options.setup?.(created)) ?? created.url
  })
  const stopPollers = async () => {
    for (const poller of running) await poller.stop({ timeoutMs: 5000 })
    running.clear()
  }
  afterEach(async () => {
    await stopPollers()
    // the outbox last, on its own: a captured table's TRUNCATE writes its .truncated event
    await db.sql.unsafe(`${tables.length > 0 ? `truncate ${tables.join(', ')}; ` : ''}truncate outbox`)
    await db.sql`update outbox_wakeup set asleep = false`
  })
  afterAll(async () => {
    expect(running.size).toBe(0)
    await created?.drop()
    await options.teardown?.()
  })

  const count = async (where: string) => (await db.sql.unsafe(`select count(*)::int as n from outbox where ${where}`))[0]!.n as number
  return {
    db,
    startPoller(input) {
      const poller = createPoller({ connectionString, intervalMin: 20, intervalMax: 200, ...options.defaults, ...input })
      running.add(poller)
      return poller
    },
    stopPollers,
    unprocessed: () => count('processed_at is null'),
    pending: () => count('processed_at is null and dead_at is null'),
  }
}
