import { fork } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import type { Command } from 'commander'
import { type PollerOptions, type ResolvedOptions, resolveOptions } from '../poller/poller-options.js'
import type { Server } from 'node:http'
import type { BatchReport } from '../poller/batch-report.js'
import { applicationName, connect, describeTarget } from '../database/connect.js'
import { ConfigError, errorMessage } from '../errors.js'
import { startHttpServer } from '../observe/http-server.js'
import { OutboxMetrics } from '../observe/metrics.js'
import { outboxTable } from '../outbox/outbox-table.js'
import { ReplicaHealth } from '../observe/replica-health.js'
import { createLogger, type LogLevel } from '../log.js'
import { createPoller, type Poller } from '../poller/poller.js'
import { parseSink, parseSinkList, type SinkSpec } from '../sinks/parse-sink.js'
import { createSinkHandlers, registerSinks } from '../sinks/create-sinks.js'
import { sinkTimeoutMs } from '../sinks/sink.js'
import { Supervisor } from '../supervisor/supervisor.js'
import type { HandlerMap, Logger } from '../types.js'
import { type SupervisorMessage, type WorkerMessage, workerEnvMarker } from '../supervisor/worker-protocol.js'
import { ExitCode } from './exit-codes.js'
import { type HandlerModule, loadHandlers } from './load-handlers.js'
import { databaseUrlFrom, optionNamer, pollerOptionsFrom } from './options.js'

/**
 * The daemon. By default a small supervisor process forks the worker that claims and handles events
 * (memory restarts, crash restarts, poison isolation); `--no-supervise` runs the worker alone.
 */
export async function runCommand(command: Command): Promise<number> {
  const flags = command.opts<{ handlers?: string; logLevel: LogLevel; supervise?: boolean; sink: string[]; sinkSecret?: string }>()
  const options = pollerOptionsFrom(command)
  const resolved = resolveOptions(options, optionNamer(command)) // every flag checked before anything else happens
  const url = databaseUrlFrom(command)
  const sinks = [...flags.sink.map((spec) => parseSink(spec)), ...parseSinkList(process.env.OUTBOX_POLLER_SINKS)]
  if (!flags.handlers && sinks.length === 0) throw new ConfigError('no handlers: pass --handlers <module> or --sink <url> (or set OUTBOX_POLLER_HANDLERS / OUTBOX_POLLER_SINKS)')
  const log = createLogger(flags.logLevel)
  const worker = { options, url, handlersPath: flags.handlers, sinks, sinkSecret: await sinkSecretFrom(flags.sinkSecret), log, resolved }
  if (process.env[workerEnvMarker] === '1' && process.send !== undefined) return exitWhenDone(runWorker({ ...worker, supervised: true }))
  if (!superviseFrom(flags.supervise)) return exitWhenDone(runWorker({ ...worker, supervised: false }))
  return runSupervisor(resolved, url, log)
}

/**
 * A worker process ends once its poller has stopped and its handler module was closed, whatever handles
 * remain (a pool the module never ended, a timer): nothing can claim any more, and a process that lingers
 * holds up systemd's stop and the supervisor's drain. The delay lets the exit code be set and the error printed.
 */
async function exitWhenDone(run: Promise<number>): Promise<number> {
  try {
    return await run
  } finally {
    setTimeout(() => process.exit(), 1_000).unref()
  }
}

/** The webhook signing secret: --sink-secret, then OUTBOX_POLLER_SINK_SECRET, then the file OUTBOX_POLLER_SINK_SECRET_FILE names. */
async function sinkSecretFrom(flag: string | undefined): Promise<string | undefined> {
  if (flag) return flag
  if (process.env.OUTBOX_POLLER_SINK_SECRET) return process.env.OUTBOX_POLLER_SINK_SECRET
  const file = process.env.OUTBOX_POLLER_SINK_SECRET_FILE
  if (!file) return undefined
  try {
    return (await readFile(file, 'utf8')).replace(/\r?\n$/, '')
  } catch (error) {
    throw new ConfigError(`OUTBOX_POLLER_SINK_SECRET_FILE ${file} cannot be read: ${errorMessage(error)}`)
  }
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
  const metrics = new OutboxMetrics()
  const supervisor = new Supervisor({
    options,
    connectionString: url,
    log: supervisorLog,
    metrics,
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
  // the supervisor serves HTTP, so health and metrics keep answering across worker restarts
  const stopHttp = await serveHttp(options, url, metrics, () => supervisor.lastLoopAt, () => supervisor.ready, supervisorLog)
  supervisor.start()
  const code = await supervisor.done
  await stopHttp()
  if (supervisor.failure !== undefined) console.error(`outbox-poller: ${supervisor.failure}`)
  return code
}

interface WorkerSetup {
  options: PollerOptions
  resolved: ResolvedOptions
  url: string
  handlersPath: string | undefined
  sinks: SinkSpec[]
  sinkSecret: string | undefined
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
  const module = setup.handlersPath === undefined ? undefined : await loadHandlers(setup.handlersPath)
  try {
    return await runPoller(setup, module?.handlers ?? {})
  } finally {
    // after the poller has stopped: nothing of the module runs any more
    await closeHandlerModule(module, setup.log)
  }
}

/** How long a handler module's close() may take once the poller has stopped. */
const handlerModuleCloseTimeoutMs = 5_000

/** Awaits the handler module's close(), at most handlerModuleCloseTimeoutMs; a failure is logged, never thrown. */
async function closeHandlerModule(module: HandlerModule | undefined, log: Logger): Promise<void> {
  if (module?.close === undefined) return
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), handlerModuleCloseTimeoutMs)))
  try {
    const outcome = await Promise.race([Promise.resolve().then(module.close), timeout])
    if (outcome === 'timeout') log.warn({ timeout_ms: handlerModuleCloseTimeoutMs }, 'the handler module\'s close() did not finish in time: exiting anyway')
    else log.info('handler module closed')
  } catch (error) {
    log.warn({ error: errorMessage(error) }, 'the handler module\'s close() failed: exiting anyway')
  } finally {
    clearTimeout(timer)
  }
}

/** Runs the poller (with the sinks and, alone, the HTTP server) until it has stopped; returns the exit code. */
async function runPoller(setup: WorkerSetup, handlers: HandlerMap): Promise<number> {
  const { log, resolved } = setup
  // sinks are built-in handlers, whose publish gives up before the handler timeout would charge the event
  const sinks = setup.sinks.length === 0 ? undefined : await createSinkHandlers(setup.sinks, { secret: setup.sinkSecret, log, timeoutMs: sinkTimeoutMs(resolved.handlerTimeoutMs) })
  const metrics = setup.supervised ? undefined : new OutboxMetrics()
  const link = setup.supervised ? supervisorLink() : { afterBatch: (report: BatchReport) => metrics!.recordBatch(report) }
  const poller = createPoller({ ...setup.options, connectionString: setup.url, handlers, logger: log, ...link })
  if (sinks !== undefined) registerSinks(poller, sinks)
  log.info({ target: describeTarget(setup.url), handlers: setup.handlersPath, sinks: sinks?.sinks.map((sink) => sink.name), supervised: setup.supervised }, 'starting')

  // Only a second OS signal, or the supervisor's explicit 'force', forces the stop: a drain request that
  // arrives together with a signal (Ctrl-C and systemd signal the worker and the supervisor at once) drains.
  let draining = false
  let signals = 0
  const stop = (why: string, force = false) => {
    if (!force && !draining) {
      draining = true
      log.info({ why }, 'stopping: finishing the batch in hand')
      void poller.stop()
    } else if (force) {
      log.warn({ why }, 'forcing stop: the batch in hand rolls back')
      void poller.stop({ force: true })
      setTimeout(() => process.exit(ExitCode.failure), 5_000).unref()
    }
  }
  const onSignal = (signal: NodeJS.Signals) => stop(signal, ++signals > 1)
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  let memoryExceeded = false
  if (setup.supervised) {
    process.on('message', (message: SupervisorMessage) => stop(message.type === 'drain' ? `supervisor: ${message.reason}` : 'supervisor: force', message.type === 'force'))
    process.on('disconnect', () => stop('supervisor gone'))
  } else {
    setInterval(() => {
      const rss = process.memoryUsage.rss()
      metrics?.setWorkerRss(rss)
      if (!memoryExceeded && rss > resolved.memoryLimitMb * 1048576) {
        memoryExceeded = true
        log.warn({ rss_mb: Math.round(rss / 1048576), limit_mb: resolved.memoryLimitMb }, 'over the memory limit: draining, then exiting with code 75 for a restart')
        stop('memory')
      }
    }, resolved.memoryCheckIntervalMs).unref()
  }

  const stopHttp = metrics === undefined ? async () => {} : await serveHttp(resolved, setup.url, metrics, () => poller.lastLoopAt, () => poller.lastLoopAt > 0, log)
  try {
    await poller.start()
    if (setup.supervised) process.send!({ type: 'ready' } satisfies WorkerMessage)
    await waitUntilStopped(poller)
  } finally {
    await sinks?.close()
    await stopHttp()
  }
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
  let lastHeartbeat = 0
  return {
    beforeDispatch: (ids, finished) => send({ type: 'dispatching', ids, finished }),
    afterBatch: (report) => {
      if (report.claimed > 0) void send({ type: 'settled', report })
      else if (Date.now() - lastHeartbeat >= 1000) {
        lastHeartbeat = Date.now()
        void send({ type: 'heartbeat' })
      }
    },
  }
}

/** Serves /healthz, /readyz and /metrics when --http is set; returns a function that stops it. */
async function serveHttp(options: ResolvedOptions, url: string, metrics: OutboxMetrics, lastLoopAt: () => number, ready: () => boolean, log: Logger): Promise<() => Promise<void>> {
  if (options.http === undefined) return async () => {}
  const sql = connect(url, { max: 1, applicationName: applicationName('health') })
  // a batch may take up to the handler timeout, and an idle loop sleeps up to --interval-max between claims
  const health = new ReplicaHealth(sql, outboxTable(options.schema, options.table), metrics, lastLoopAt, options.handlerTimeoutMs + options.intervalMaxMs + 5_000)
  health.startSampling()
  let server: Server
  try {
    server = await startHttpServer(options.http.host, options.http.port, {
      metrics,
      health: () => health.check(),
      ready: () => (ready() ? { ok: true } : { ok: false, reason: 'no worker is polling' }),
    })
  } catch (error) {
    health.stop()
    await sql.end({ timeout: 1 })
    throw new ConfigError(`--http ${options.http.host}:${options.http.port}: ${errorMessage(error)}`)
  }
  log.info({ http: `${options.http.host}:${options.http.port}` }, 'serving /healthz, /readyz and /metrics')
  return async () => {
    health.stop()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await sql.end({ timeout: 1 })
  }
}
