import { readFile } from 'node:fs/promises'
import type { Command } from 'commander'
import { describeTarget } from '../database/connect.js'
import { ConfigError, errorMessage } from '../errors.js'
import type { ResolvedHttpOptions } from '../observe/http-options.js'
import type { PollerOptions, ResolvedOptions } from '../poller/poller-options.js'
import { createPoller } from '../create-poller.js'
import type { SinkSpec } from '../sinks/parse-sink.js'
import { sinkTimeoutMs } from '../sinks/sink.js'
import { ExitCode } from '../supervisor/exit-codes.js'
import { LoopLiveness, loopAllowances } from '../supervisor/loop-liveness.js'
import { MemoryWatch } from '../supervisor/memory-watch.js'
import { StopRequests } from '../supervisor/stop-requests.js'
import type { ResolvedSupervisorOptions } from '../supervisor/supervisor-options.js'
import { SystemdNotifier, SystemdWatchdog } from '../supervisor/systemd-notify.js'
import { WorkerLink } from '../supervisor/worker-link.js'
import type { HandlerMap, Logger } from '../types.js'
import { type HandlerModule, loadHandlers } from './load-handlers.js'

export interface WorkerSetup {
  /** The poller options as given, for createPoller. */
  options: PollerOptions
  poller: ResolvedOptions
  supervisor: ResolvedSupervisorOptions
  http: ResolvedHttpOptions
  httpName: string
  url: string
  handlersPath: string | undefined
  sinks: SinkSpec[]
  sinkSecret: string | undefined
  log: Logger
  /** Under a supervisor: report batches over IPC, drain on its message or when it disappears. */
  supervised: boolean
}

/** The webhook signing secret: --sink-secret / OUTBOX_POLLER_SINK_SECRET, or the file --sink-secret-file / OUTBOX_POLLER_SINK_SECRET_FILE names (a flag wins over an env variable). */
export async function sinkSecretFrom(command: Command): Promise<string | undefined> {
  const { sinkSecret, sinkSecretFile } = command.opts<{ sinkSecret?: string; sinkSecretFile?: string }>()
  const fromFlag = (name: string) => command.getOptionValueSource(name) === 'cli'
  if (!sinkSecretFile || (sinkSecret && (fromFlag('sinkSecret') || !fromFlag('sinkSecretFile')))) return sinkSecret || undefined
  const name = fromFlag('sinkSecretFile') ? '--sink-secret-file' : 'OUTBOX_POLLER_SINK_SECRET_FILE'
  try {
    return (await readFile(sinkSecretFile, 'utf8')).replace(/\r?\n$/, '')
  } catch (error) {
    throw new ConfigError(`${name} ${sinkSecretFile} cannot be read: ${errorMessage(error)}`)
  }
}

/**
 * One poller in this process, until it has stopped and the handler module was closed; then the process
 * ends whatever handles remain (a pool the module never ended, a timer): nothing can claim any more, and a
 * process that lingers holds up systemd's stop and the supervisor's drain. The delay lets the exit code be
 * set and the error printed.
 */
export async function runWorker(setup: WorkerSetup): Promise<number> {
  try {
    const module = setup.handlersPath === undefined ? undefined : await loadHandlers(setup.handlersPath)
    try {
      return await runPoller(setup, module?.handlers ?? {})
    } finally {
      // after the poller has stopped: nothing of the module runs any more
      await closeHandlerModule(module, setup.log)
    }
  } finally {
    setTimeout(() => process.exit(), 1_000).unref()
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

/**
 * SIGTERM / SIGINT: drain, exit 0 (also under a supervisor: a terminal's Ctrl-C signals both); a second
 * signal forces the stop. Alone, the worker watches its own memory and drains with exit code 75 above the limit.
 */
async function runPoller(setup: WorkerSetup, handlers: HandlerMap): Promise<number> {
  const { log, poller: resolved } = setup
  // Sinks (broker clients) and metrics (prom-client, served by the supervisor when there is one) load only when used.
  const sinkModule = setup.sinks.length === 0 ? undefined : await import('../sinks/create-sinks.js')
  const sinks = sinkModule === undefined ? undefined : await sinkModule.createSinkHandlers(setup.sinks, { secret: setup.sinkSecret, log, timeoutMs: sinkTimeoutMs(resolved.handlerTimeoutMs) })
  const metrics = setup.supervised ? undefined : new (await import('../observe/metrics.js')).OutboxMetrics({ tenants: resolved.schemas !== undefined, perSchema: setup.http.metricsPerSchema })
  metrics?.setWorkerMemoryLimit(setup.supervisor.memoryLimitMb * 1_048_576)
  const link = setup.supervised ? new WorkerLink(processChannel(resolved.drainTimeoutMs + orphanGraceMs)) : undefined
  // alone under systemd (OUTBOX_POLLER_SUPERVISE=false), the worker is the unit's main process and notifies itself
  const notifier = setup.supervised ? undefined : SystemdNotifier.fromEnvironment(process.env, process.pid, log)
  const loop = new LoopLiveness()
  const hooks = link?.hooks ?? {
    afterBatch: (report) => {
      metrics!.recordBatch(report)
      loop.iterated(!report.committed)
    },
  }
  const allowances = loopAllowances(resolved)
  const watchdog = notifier && new SystemdWatchdog(notifier, () => loop.alive(allowances), log)
  const poller = createPoller({ ...setup.options, connectionString: setup.url, handlers, logger: log, ...hooks })
  if (sinks !== undefined) sinkModule!.registerSinks(poller, sinks)
  log.info({ target: describeTarget(setup.url), handlers: setup.handlersPath, sinks: sinks?.sinks.map((sink) => sink.name), supervised: setup.supervised }, 'starting')

  const stops = new StopRequests(poller, log, () => setTimeout(() => process.exit(ExitCode.failure), 5_000).unref())
  process.on('SIGTERM', (signal) => stops.signal(signal))
  process.on('SIGINT', (signal) => stops.signal(signal))
  link?.onStopRequest((why, force) => stops.request(why, force))
  // A supervisor killed while this worker was still loading disconnected before anyone listened: it will not
  // say so again, and a worker left running would poll unsupervised.
  if (link !== undefined && !process.connected) {
    log.warn('the supervisor is gone: exiting before polling')
    await sinks?.close()
    return ExitCode.ok
  }
  let memoryExceeded = false
  const memory = new MemoryWatch({
    limitMb: setup.supervisor.memoryLimitMb,
    intervalMs: setup.supervisor.memoryCheckIntervalMs,
    target: () => (memoryExceeded ? undefined : process),
    rss: () => process.memoryUsage.rss(),
    onSample: (rss) => metrics?.setWorkerRss(rss),
    onOver: (_, rssMb) => {
      memoryExceeded = true
      log.warn({ rss_mb: rssMb, limit_mb: setup.supervisor.memoryLimitMb }, 'over the memory limit: draining, then exiting with code 75 for a restart')
      stops.request('memory')
    },
  })
  if (!setup.supervised) memory.start()

  const stopHttp = metrics === undefined ? async () => {} : await (await import('../observe/serve-http.js')).serveHttp({ http: setup.http, optionName: setup.httpName, poller: resolved, connectionString: setup.url, metrics, lastLoopAt: () => poller.lastLoopAt, ready: () => poller.lastLoopAt > 0, log })
  try {
    await poller.start()
    link?.ready()
    notifier?.ready()
    watchdog?.start()
    await poller.done
    await poller.stop()
  } finally {
    watchdog?.stop()
    memory.stop()
    await sinks?.close()
    await stopHttp()
  }
  return memoryExceeded ? ExitCode.memoryRestart : ExitCode.ok
}

/** How long past its drain timeout a worker whose supervisor is gone may take before it exits regardless. */
const orphanGraceMs = 10_000

/**
 * This process's IPC channel to the supervisor that forked it. Once the supervisor is gone the worker drains,
 * but never outlives `exitAfterMs` (a drain stuck on an unanswering database must not leave it running unsupervised).
 */
function processChannel(exitAfterMs: number): ConstructorParameters<typeof WorkerLink>[0] {
  return {
    get connected() {
      return process.connected
    },
    send: (message, sent) => void process.send!(message, undefined, {}, () => sent()),
    onMessage: (listener) => void process.on('message', listener as (message: unknown) => void),
    onDisconnect: (listener) =>
      void process.on('disconnect', () => {
        setTimeout(() => process.exit(ExitCode.failure), exitAfterMs).unref()
        listener()
      }),
  }
}
