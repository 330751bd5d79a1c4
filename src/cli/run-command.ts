import { fork } from 'node:child_process'
import type { Command } from 'commander'
import { type PollerOptions, type ResolvedOptions, resolveOptions } from '../config.js'
import { describeTarget } from '../db.js'
import { ConfigError } from '../errors.js'
import { createLogger, type LogLevel } from '../log.js'
import { createPoller, type Poller } from '../poller.js'
import { Supervisor } from '../supervisor.js'
import type { Logger } from '../types.js'
import { type SupervisorMessage, type WorkerMessage, workerEnvMarker } from '../worker-protocol.js'
import { ExitCode } from './exit-codes.js'
import { loadHandlers } from './load-handlers.js'
import { databaseUrlFrom, optionNamer, pollerOptionsFrom } from './options.js'

/**
 * The daemon. By default a small supervisor process forks the worker that claims and handles events
 * (memory restarts, crash restarts, poison isolation); `--no-supervise` runs the worker alone.
 */
export async function runCommand(command: Command): Promise<number> {
  const flags = command.opts<{ handlers?: string; logLevel: LogLevel; supervise?: boolean }>()
  const options = pollerOptionsFrom(command)
  const resolved = resolveOptions(options, optionNamer(command)) // every flag checked before anything else happens
  const url = databaseUrlFrom(command)
  if (!flags.handlers) throw new ConfigError('no handlers: pass --handlers <module> (or set OUTBOX_POLLER_HANDLERS)')
  const log = createLogger(flags.logLevel)
  if (process.env[workerEnvMarker] === '1' && process.send !== undefined) return runWorker({ options, url, handlersPath: flags.handlers, log, supervised: true, resolved })
  if (!superviseFrom(flags.supervise)) return runWorker({ options, url, handlersPath: flags.handlers, log, supervised: false, resolved })
  return runSupervisor(resolved, url, log)
}

function superviseFrom(flag: boolean | undefined): boolean {
  if (flag === false) return false
  const env = process.env.OUTBOX_POLLER_SUPERVISE
  if (env === undefined || env === '' || env === 'true' || env === '1') return true
  if (env === 'false' || env === '0') return false
  throw new ConfigError(`OUTBOX_POLLER_SUPERVISE must be true or false (got ${JSON.stringify(env)})`)
}

/**
 * The supervisor: SIGTERM / SIGINT drain the worker and exit 0; a second one forces it (rollback);
 * SIGHUP replaces the worker without stopping the service (new handler code is loaded).
 */
async function runSupervisor(options: ResolvedOptions, url: string, log: Logger): Promise<number> {
  const supervisorLog = log.child({ role: 'supervisor' })
  const workerArgs = [...process.argv.slice(2), '--no-supervise']
  const supervisor = new Supervisor({
    options,
    connectionString: url,
    log: supervisorLog,
    spawnWorker: () => fork(process.argv[1]!, workerArgs, { env: { ...process.env, [workerEnvMarker]: '1' }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
  })
  let signals = 0
  const onStop = (signal: NodeJS.Signals) => {
    signals++
    supervisorLog.info({ signal }, signals === 1 ? 'stopping: draining the worker' : 'second signal: forcing the worker to roll back')
    supervisor.stop({ force: signals > 1 })
  }
  process.on('SIGTERM', onStop)
  process.on('SIGINT', onStop)
  process.on('SIGHUP', () => {
    supervisorLog.info('SIGHUP: rolling restart of the worker')
    supervisor.reload()
  })
  supervisor.start()
  const code = await supervisor.done
  if (supervisor.failure !== undefined) console.error(`outbox-poller: ${supervisor.failure}`)
  return code
}

interface WorkerSetup {
  options: PollerOptions
  resolved: ResolvedOptions
  url: string
  handlersPath: string
  log: Logger
  /** Under a supervisor: report batches over IPC, drain on its message or when it disappears. */
  supervised: boolean
}

/**
 * One poller in this process. SIGTERM / SIGINT: stop claiming, finish and commit the batch in hand, exit 0
 * (also under a supervisor: a terminal's Ctrl-C signals both, and a stop must never charge an attempt).
 * A second signal forces the stop: handlers are aborted and the batch rolls back, with no attempt charged.
 * Alone, the worker watches its own memory and drains with exit code 75 above the limit.
 */
async function runWorker(setup: WorkerSetup): Promise<number> {
  const { log, resolved } = setup
  const handlers = await loadHandlers(setup.handlersPath)
  const link = setup.supervised ? supervisorLink() : {}
  const poller = createPoller({ ...setup.options, connectionString: setup.url, handlers, logger: log, ...link })
  log.info({ target: describeTarget(setup.url), handlers: setup.handlersPath, supervised: setup.supervised }, 'starting')

  let stops = 0
  const stop = (why: string, force = false) => {
    stops++
    if (stops === 1 && !force) {
      log.info({ why }, 'stopping: finishing the batch in hand')
      void poller.stop()
    } else {
      log.warn({ why }, 'forcing stop: the batch in hand rolls back')
      void poller.stop({ force: true })
      setTimeout(() => process.exit(ExitCode.failure), 5_000).unref()
    }
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  let memoryExceeded = false
  if (setup.supervised) {
    process.on('message', (message: SupervisorMessage) => stop(message.type === 'drain' ? `supervisor: ${message.reason}` : 'supervisor: force', message.type === 'force'))
    process.on('disconnect', () => stop('supervisor gone'))
  } else {
    setInterval(() => {
      const rss = process.memoryUsage.rss()
      if (!memoryExceeded && rss > resolved.memoryLimitMb * 1048576) {
        memoryExceeded = true
        log.warn({ rss_mb: Math.round(rss / 1048576), limit_mb: resolved.memoryLimitMb }, 'over the memory limit: draining, then exiting with code 75 for a restart')
        stop('memory')
      }
    }, resolved.memoryCheckIntervalMs).unref()
  }

  await poller.start()
  if (setup.supervised) process.send!({ type: 'ready' } satisfies WorkerMessage)
  await waitUntilStopped(poller)
  return memoryExceeded ? ExitCode.memoryRestart : ExitCode.ok
}

async function waitUntilStopped(poller: Poller): Promise<void> {
  await poller.done
  await poller.stop()
}

/** Batch reports for the supervisor. The ids are flushed to it before any handler runs. */
function supervisorLink(): Pick<PollerOptions, 'beforeDispatch' | 'afterBatch'> {
  const send = (message: WorkerMessage) =>
    new Promise<void>((resolve) => {
      if (!process.connected) return resolve()
      process.send!(message, undefined, {}, () => resolve())
    })
  return { beforeDispatch: (ids) => send({ type: 'dispatching', ids }), afterBatch: (claimed) => void (claimed > 0 && send({ type: 'settled' })) }
}
