import type { Command } from 'commander'
import { resolveOptions } from '../config.js'
import { describeTarget } from '../db.js'
import { ConfigError } from '../errors.js'
import { createLogger, type LogLevel } from '../log.js'
import { createPoller } from '../poller.js'
import { ExitCode } from './exit-codes.js'
import { loadHandlers } from './load-handlers.js'
import { databaseUrlFrom, optionNamer, pollerOptionsFrom } from './options.js'

/**
 * The daemon. SIGTERM / SIGINT: stop claiming, finish and commit the batch in hand, exit 0.
 * A second signal forces the stop: handlers are aborted and the batch rolls back (no attempt charged).
 */
export async function runCommand(command: Command): Promise<number> {
  const flags = command.opts<{ handlers?: string; logLevel: LogLevel }>()
  const options = pollerOptionsFrom(command)
  resolveOptions(options, optionNamer(command)) // every flag checked before anything else happens
  const url = databaseUrlFrom(command)
  if (!flags.handlers) throw new ConfigError('no handlers: pass --handlers <module> (or set OUTBOX_POLLER_HANDLERS)')
  const handlers = await loadHandlers(flags.handlers)
  const log = createLogger(flags.logLevel)
  const poller = createPoller({ ...options, connectionString: url, handlers, logger: log })
  log.info({ target: describeTarget(url), handlers: flags.handlers }, 'starting')

  let signals = 0
  const onSignal = (signal: NodeJS.Signals) => {
    signals++
    if (signals === 1) {
      log.info({ signal }, 'stopping: finishing the batch in hand')
      void poller.stop()
    } else {
      log.warn({ signal }, 'second signal: forcing stop, the batch in hand rolls back')
      void poller.stop({ force: true })
      setTimeout(() => process.exit(ExitCode.failure), 5_000).unref()
    }
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)

  await poller.start()
  await poller.done
  await poller.stop()
  return ExitCode.ok
}
