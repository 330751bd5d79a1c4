import pino from 'pino'
import { afterAll, afterEach, beforeAll } from 'vitest'
import { captureTable } from '../../src/capture/capture.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { createPoller } from '../../src/create-poller.js'
import { type Poller } from '../../src/poller/poller.js'
import { parseSink } from '../../src/sinks/parse-sink.js'
import { createSinkHandlers, registerSinks, type SinkHandlers } from '../../src/sinks/create-sinks.js'
import type { SinkOptions } from '../../src/sinks/sink.js'
import type { Handler } from '../../src/types.js'
import { createTestDatabase, laterDatabase, type TestDatabase } from './database.js'

/** The secret `startRelay` signs webhooks with. */
export const testWebhookSecret = 'whsec_dGVzdC1zZWNyZXQtZm9yLXNpbmtzLTEyMzQ1Njc4'

/** Log lines a test can assert on (outages must be logged once, credentials never). */
export interface CapturedLog {
  logger: pino.Logger
  lines: Array<Record<string, unknown> & { level: number; msg: string }>
}

export function captureLog(): CapturedLog {
  const lines: CapturedLog['lines'] = []
  const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line)) })
  return { logger, lines }
}

/** A poller relaying to sinks, and how to stop both in the right order. */
export interface Relay {
  poller: Poller
  sinks: SinkHandlers
  log: CapturedLog
  stop(options?: { force?: boolean }): Promise<void>
}

/** Every relay a test started, stopped by its afterEach. */
export const relays = new Set<Relay>()

/**
 * Starts a poller relaying to the sinks of `urls` (`[pattern=]URL` specs), registered as the CLI registers
 * them, then `extra` handlers, which run after the sinks of the same event published it.
 * Fast polling and retries, so tests wait for conditions, not for intervals.
 */
export async function startRelay(
  databaseUrl: string,
  urls: string[],
  options: { sink?: Partial<SinkOptions>; poller?: Parameters<typeof createPoller>[0]; extra?: Record<string, Handler> } = {},
): Promise<Relay> {
  const log = captureLog()
  const sinks = await createSinkHandlers(urls.map((url) => parseSink(url)), { log: log.logger, secret: testWebhookSecret, timeoutMs: 5_000, ...options.sink })
  const poller = createPoller({
    connectionString: databaseUrl,
    intervalMin: 20,
    intervalMax: 200,
    retryDelay: 10,
    retryDelayMax: 50,
    logger: log.logger,
    ...options.poller,
    handlers: {},
  })
  registerSinks(poller, sinks)
  for (const [pattern, handler] of Object.entries(options.extra ?? {})) poller.on(pattern, handler)
  const relay: Relay = {
    poller,
    sinks,
    log,
    async stop(stopOptions = {}) {
      relays.delete(relay)
      await poller.stop({ timeoutMs: 10_000, ...stopOptions })
      await sinks.close()
    },
  }
  relays.add(relay)
  await poller.start()
  return relay
}

export async function stopAllRelays(): Promise<void> {
  for (const relay of [...relays]) await relay.stop()
}

/** A relay test file's database, and what it removes after the file. */
export interface RelaySuite {
  /** The file's database (usable from the first test on; it may be destructured at load). */
  readonly db: TestDatabase
  /** Runs `cleanup` after the file (deleting a queue or stream it made); a failure is ignored. */
  afterFile(cleanup: () => Promise<void>): void
}

/**
 * One database per relay test file, with `tables` (name → columns and entity) created and captured before
 * the tests; after each test its relays are stopped and the tables and the outbox emptied.
 */
export function relaySuite(tables: Record<string, { columns: string; entity: string }>, options: { teardown?: () => Promise<void>; ordering?: 'entity' | 'group' } = {}): RelaySuite {
  let created: TestDatabase | undefined
  const cleanups: Array<() => Promise<void>> = []
  beforeAll(async () => {
    created = await createTestDatabase({ ordering: options.ordering })
    for (const [table, { columns, entity }] of Object.entries(tables)) {
      await created.sql.unsafe(`create table ${table} (${columns})`)
      await captureTable(created.sql, outboxTable('public', 'outbox'), { table, entity })
    }
  })
  afterEach(async () => {
    await stopAllRelays()
    // the outbox last, on its own: a captured table's TRUNCATE writes its .truncated event
    await created!.sql.unsafe(`truncate ${Object.keys(tables).join(', ')}; truncate outbox`)
  })
  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup().catch(() => {})
    await options.teardown?.()
    await created?.drop()
  })
  return { db: laterDatabase(() => created), afterFile: (cleanup) => void cleanups.push(cleanup) }
}
