import { fork } from 'node:child_process'
import type { Command } from 'commander'
import { ConfigError } from '../errors.js'
import { createLogger, type LogLevel } from '../log.js'
import { resolveHttpOptions } from '../observe/http-options.js'
import { resolveOptions } from '../poller/poller-options.js'
import { parseSink, parseSinkList } from '../sinks/parse-sink.js'
import { loopAllowances } from '../supervisor/loop-liveness.js'
import { resolveSupervisorOptions } from '../supervisor/supervisor-options.js'
import { SystemdNotifier, systemdNotifyVariables, SystemdWatchdog } from '../supervisor/systemd-notify.js'
import { workerEnvMarker } from '../supervisor/worker-protocol.js'
import { componentOptionsFrom, databaseUrlFrom, optionNamer } from './options.js'
import { runWorker, sinkSecretFrom, type WorkerSetup } from './run-worker.js'

/**
 * The daemon. By default a small supervisor process forks the worker that claims and handles events
 * (memory restarts, crash restarts, poison isolation); `--no-supervise` runs the worker alone.
 */
export async function runCommand(command: Command): Promise<number> {
  const flags = command.opts<{ handlers?: string; logLevel: LogLevel; supervise?: boolean; sink: string[] }>()
  // every flag checked before anything else happens, each component's by its own resolver
  const nameOf = optionNamer(command)
  const given = componentOptionsFrom(command)
  const poller = resolveOptions(given.poller, nameOf)
  const supervisor = resolveSupervisorOptions({ ...given.supervisor, drainTimeout: poller.drainTimeoutMs }, nameOf)
  const http = resolveHttpOptions(given.http, nameOf)
  if (http.metricsPerSchema && poller.schemas === undefined) throw new ConfigError('--metrics-per-schema (OUTBOX_POLLER_METRICS_PER_SCHEMA) needs --schemas: with one outbox every series is that outbox\'s')
  const url = databaseUrlFrom(command)
  const sinks = [...flags.sink.map((spec) => parseSink(spec)), ...parseSinkList(process.env.OUTBOX_POLLER_SINKS)]
  if (!flags.handlers && sinks.length === 0) throw new ConfigError('no handlers: pass --handlers <module> or --sink <url> (or set OUTBOX_POLLER_HANDLERS / OUTBOX_POLLER_SINKS)')
  const log = createLogger(flags.logLevel)
  const setup: WorkerSetup = { options: given.poller, poller, supervisor, http, httpName: nameOf('http'), url, handlersPath: flags.handlers, sinks, sinkSecret: await sinkSecretFrom(command), log, supervised: false }
  if (process.env[workerEnvMarker] === '1' && process.send !== undefined) return runWorker({ ...setup, supervised: true })
  if (!superviseFrom(flags.supervise)) return runWorker(setup)
  return runSupervisor(setup)
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
async function runSupervisor(setup: WorkerSetup): Promise<number> {
  const log = setup.log.child({ role: 'supervisor' })
  const workerArgs = [...process.argv.slice(2), '--no-supervise']
  // loaded here, not at import: a worker process (the same command, forked) never needs them
  const [{ OutboxMetrics }, { serveHttp }, { databaseCrashCharge }, { Supervisor }] = await Promise.all([import('../observe/metrics.js'), import('../observe/serve-http.js'), import('../supervisor/crash-charge.js'), import('../supervisor/supervisor.js')])
  const metrics = new OutboxMetrics({ tenants: setup.poller.schemas !== undefined, perSchema: setup.http.metricsPerSchema })
  const { schema, table, maxAttempts } = setup.poller
  // under systemd (Type=notify) the supervisor, the unit's main process, says when it is ready and pings the watchdog
  const notifier = SystemdNotifier.fromEnvironment(process.env, process.pid, log)
  const workerEnv: NodeJS.ProcessEnv = { ...process.env, [workerEnvMarker]: '1' }
  for (const name of systemdNotifyVariables) delete workerEnv[name]
  const supervisor = new Supervisor({
    options: setup.supervisor,
    crashCharge: databaseCrashCharge({ connectionString: setup.url, schema, table, maxAttempts, log, metrics }),
    log,
    metrics,
    onReady: () => notifier?.ready(),
    spawnWorker: () => fork(process.argv[1]!, workerArgs, { env: workerEnv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
  })
  const allowances = loopAllowances(setup.poller)
  const watchdog = notifier && new SystemdWatchdog(notifier, () => supervisor.loopAlive(allowances), log)
  let signals = 0
  const onStop = (signal: NodeJS.Signals) => {
    signals++
    log.info({ signal }, signals === 1 ? 'stopping: draining the worker' : 'second signal: forcing the worker to roll back')
    supervisor.stop({ force: signals > 1 })
  }
  process.on('SIGTERM', onStop)
  process.on('SIGINT', onStop)
  process.on('SIGHUP', () => {
    log.info('SIGHUP: rolling restart of the worker')
    supervisor.reload()
  })
  // the supervisor serves HTTP, so health and metrics keep answering across worker restarts
  const stopHttp = await serveHttp({ http: setup.http, optionName: setup.httpName, poller: setup.poller, connectionString: setup.url, metrics, lastLoopAt: () => supervisor.lastLoopAt, ready: () => supervisor.ready, log })
  supervisor.start()
  watchdog?.start()
  const code = await supervisor.done
  watchdog?.stop()
  await stopHttp()
  if (supervisor.failure !== undefined) console.error(`outbox-poller: ${supervisor.failure}`)
  return code
}
