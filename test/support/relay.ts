import pino from 'pino'
import { createPoller, type Poller } from '../../src/poller/poller.js'
import { parseSink } from '../../src/sinks/parse-sink.js'
import { createSinkHandlers, registerSinks, type SinkHandlers } from '../../src/sinks/create-sinks.js'
import type { SinkOptions } from '../../src/sinks/sink.js'
import type { Handler } from '../../src/types.js'

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
