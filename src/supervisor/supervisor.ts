import type { ChildProcess } from 'node:child_process'
import pidusage from 'pidusage'
import type { OutboxMetrics } from '../observe/metrics.js'
import { exponentialDelayMs } from '../poller/backoff.js'
import { parseTenantEventId } from '../tenants/tenant-event-id.js'
import type { Logger } from '../types.js'
import { type CrashCharge, CrashWindow } from './crash-charge.js'
import { ExitCode } from './exit-codes.js'
import { type LoopAllowances, LoopLiveness } from './loop-liveness.js'
import { MemoryWatch } from './memory-watch.js'
import type { ResolvedSupervisorOptions } from './supervisor-options.js'
import type { RestartReason, SupervisorMessage, WorkerMessage } from './worker-protocol.js'

/** What a supervisor runs with: its options and its seams. */
export interface SupervisorSetup {
  options: ResolvedSupervisorOptions
  /** Starts one worker process with an IPC channel (the CLI forks itself with --no-supervise). */
  spawnWorker: () => WorkerProcess
  /** Charges a crash to the events the dead worker had in flight (`databaseCrashCharge`). */
  crashCharge: CrashCharge
  /** The worker's RSS in bytes. Default: pidusage. */
  sampleRss?: (pid: number) => Promise<number>
  log: Logger
  /** Fed with the workers' batch reports, RSS samples and restarts, when HTTP metrics are served. */
  metrics?: OutboxMetrics
  /** Called each time a worker starts polling (systemd's READY=1). */
  onReady?: () => void
}

/** The part of a ChildProcess the supervisor uses. */
export type WorkerProcess = Pick<ChildProcess, 'pid' | 'connected' | 'send' | 'kill' | 'on'>

interface Worker {
  child: WorkerProcess
  /** Ids the worker announced and has not reported finished: the suspects if it dies now. */
  inFlight: Map<string, Lane>
  /** The worker's batch, as it reported it: being handled, or how the last one ended. */
  batch?: 'in hand' | 'committed' | 'rolled back'
  /** The lanes whose batch is being handled (two with overlapping batches): the worker's batch is in hand while one is. */
  inHand: Set<Lane>
  ready: boolean
  /** Its poll loop's reports: when it last claimed, and whether that claim failed. */
  loop: LoopLiveness
  retiring?: RestartReason
  drainTimer?: NodeJS.Timeout
  killedAfterDrainTimeout?: boolean
  /** Found over the memory limit while a retired worker still drained: checked again once that one has exited. */
  replacementHeld?: boolean
}

/**
 * Runs one worker process at a time and keeps it healthy: samples its RSS and replaces it (drain, then a
 * fresh worker) above the memory limit; restarts it with backoff when it crashes; charges a crash to the
 * events it was handling and marks them suspect, so a poison event is isolated and dead-lettered instead
 * of crashing every replica forever. Signals are wired by the CLI: stop() on SIGTERM, reload() on SIGHUP.
 */
export class Supervisor {
  readonly restarts: Record<RestartReason, number> = { memory: 0, crash: 0, signal: 0, reload: 0 }
  /** Exit code when the supervisor is done: 0 after a stop; 1 after a crash loop or a worker that could not reach the database; 2 if the worker had a configuration error. */
  readonly done: Promise<number>
  /** Why the supervisor gave up, if it did. */
  failure: string | undefined
  readonly #o: SupervisorSetup
  readonly #workers = new Set<Worker>()
  readonly #crashes: CrashWindow
  readonly #memory: MemoryWatch<Worker>
  #active: Worker | undefined
  #restartTimer: NodeJS.Timeout | undefined
  #stopping = false
  #finish!: (code: number) => void

  constructor(setup: SupervisorSetup) {
    this.#o = setup
    this.#crashes = new CrashWindow(setup.options.crashLimit, setup.options.crashWindowMs)
    const sampleRss = setup.sampleRss ?? (async (pid: number) => (await pidusage(pid)).memory)
    this.#memory = new MemoryWatch<Worker>({
      limitMb: setup.options.memoryLimitMb,
      intervalMs: setup.options.memoryCheckIntervalMs,
      target: () => (this.#active?.child.pid === undefined || this.#active.retiring !== undefined ? undefined : this.#active),
      rss: (worker) => sampleRss(worker.child.pid!),
      onSample: (rss) => this.#o.metrics?.setWorkerRss(rss),
      onOver: (worker, rssMb) => this.#overMemory(worker, rssMb),
    })
    setup.metrics?.setWorkerMemoryLimit(setup.options.memoryLimitMb * 1_048_576)
    this.done = new Promise((resolve) => (this.#finish = resolve))
  }

  /** When the active worker's loop last reported in (0: none yet): for /healthz. */
  get lastLoopAt(): number {
    return this.#active?.loop.lastLoopAt ?? 0
  }

  /**
   * The active worker's poll loop keeps iterating, within the allowances: what the systemd watchdog pings
   * on. Waiting to restart a crashed worker (a backoff of at most 30 s) is not a hang.
   */
  loopAlive(allowances: LoopAllowances, now = Date.now()): boolean {
    return this.#active === undefined || this.#active.loop.alive(allowances, now)
  }

  /** A worker is polling: for /readyz. */
  get ready(): boolean {
    return this.#active?.ready === true && !this.#stopping
  }

  start(): void {
    this.#active = this.#spawn()
    this.#memory.start()
  }

  /** Rolling restart (SIGHUP): a fresh worker starts while the old one finishes its batch. */
  reload(): void {
    if (!this.#stopping) this.#replace('reload')
  }

  /** Graceful: drain every worker, then finish with exit code 0. `force`: workers roll back at once. */
  stop(options: { force?: boolean } = {}): void {
    this.#stopping = true
    this.#memory.stop()
    clearTimeout(this.#restartTimer)
    for (const worker of this.#workers) {
      if (options.force) {
        worker.retiring ??= 'signal' // a stop, not a crash: nothing is charged
        send(worker, { type: 'force' })
        setTimeout(() => worker.child.kill('SIGKILL'), 5_000).unref()
      } else if (worker.retiring === undefined) {
        this.#retire(worker, 'signal')
      }
    }
    if (this.#workers.size === 0) void this.#end(ExitCode.ok)
  }

  #spawn(): Worker {
    const child = this.#o.spawnWorker()
    const worker: Worker = { child, inFlight: new Map(), inHand: new Set(), ready: false, loop: new LoopLiveness() }
    this.#workers.add(worker)
    child.on('message', (message: WorkerMessage) => {
      if (message.type === 'dispatching') {
        const lane = message.lane ?? 0
        worker.batch = 'in hand'
        worker.inHand.add(lane)
        for (const id of message.ids) worker.inFlight.set(id, lane)
        for (const id of message.finished) worker.inFlight.delete(id)
        worker.loop.iterated(false)
      } else if (message.type === 'settled') {
        forgetSettled(worker.inFlight, message.report.schema, message.report.lane ?? 0)
        worker.inHand.delete(message.report.lane ?? 0)
        // the other lane's batch may still be in hand
        worker.batch = worker.inHand.size > 0 ? 'in hand' : message.report.committed ? 'committed' : 'rolled back'
        worker.loop.iterated(!message.report.committed)
        this.#o.metrics?.recordBatch(message.report)
      } else if (message.type === 'heartbeat') worker.loop.iterated(message.claimFailed === true)
      else if (message.type === 'ready') {
        worker.ready = true
        worker.loop.iterated(false)
        this.#o.onReady?.()
      }
    })
    child.on('exit', (code, signal) => void this.#onExit(worker, code, signal))
    this.#o.log.info({ worker_pid: child.pid }, 'worker started')
    return worker
  }

  #replace(reason: RestartReason): void {
    const old = this.#active
    clearTimeout(this.#restartTimer) // a pending crash restart is replaced by this one
    this.restarts[reason]++
    this.#o.metrics?.recordRestart(reason)
    if (old !== undefined) this.#retire(old, reason)
    // The old worker stopped claiming when it got the drain message: SKIP LOCKED keeps the two apart.
    this.#active = this.#spawn()
    this.#o.log.info({ reason, old_pid: old?.child.pid, worker_pid: this.#active.child.pid, restarts: this.restarts }, 'worker restarted')
  }

  #retire(worker: Worker, reason: RestartReason): void {
    worker.retiring = reason
    send(worker, { type: 'drain', reason })
    worker.drainTimer = setTimeout(() => {
      this.#o.log.warn({ worker_pid: worker.child.pid, drain_timeout_ms: this.#o.options.drainTimeoutMs }, `worker did not exit within --drain-timeout: killing it; ${batchState(worker)}`)
      worker.killedAfterDrainTimeout = true
      worker.child.kill('SIGKILL')
    }, this.#o.options.drainTimeoutMs)
  }

  #overMemory(worker: Worker, rssMb: number): void {
    if (this.#active !== worker || this.#stopping) return
    const fields = { worker_pid: worker.child.pid, rss_mb: rssMb, limit_mb: this.#o.options.memoryLimitMb }
    if (this.#workers.size > 1) {
      // One retiree at a time: its exit checks again at once (a fresh worker beside two draining ones
      // could hold three batches in memory).
      if (!worker.replacementHeld) this.#o.log.warn(fields, 'worker over its memory limit: replacing it once the previous worker has exited')
      worker.replacementHeld = true
      return
    }
    this.#o.log.warn(fields, 'worker over its memory limit: draining it and starting a fresh one')
    this.#replace('memory')
  }

  async #onExit(worker: Worker, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    clearTimeout(worker.drainTimer)
    this.#workers.delete(worker)
    const pid = worker.child.pid
    const how = signal !== null ? `signal ${signal}` : `exit code ${code}`
    this.#o.log.info({ worker_pid: pid, code, signal }, 'worker exited')
    if (worker.retiring === undefined) {
      if (!worker.ready && (code === ExitCode.usage || code === ExitCode.failure)) {
        // It already retried the database for --connect-timeout, or its configuration is wrong: restarting won't help.
        this.failure = `the worker could not start (${how}; see above): not restarting`
        this.#o.log.error({ worker_pid: pid, code }, 'worker could not start: not restarting')
        return this.#end(code)
      }
      if (code === 0 && worker.batch !== 'in hand') {
        // It drained and stopped by itself (a SIGTERM or SIGINT sent to the worker alone): not a crash.
        this.#o.log.warn({ worker_pid: pid }, 'worker stopped by itself after draining: starting a fresh one')
        return this.#restartAfter(worker, 250, 'signal')
      }
      return this.#onCrash(worker, how, await this.#o.crashCharge.charge(pid, byLane(worker.inFlight), `worker died (${how}) while handling this event`))
    }
    // A worker we were stopping (and killed after --drain-timeout or a forced stop) charges nothing:
    // a stop never costs an event an attempt.
    if (code !== 0 || worker.killedAfterDrainTimeout) this.#o.log.warn({ worker_pid: pid, how }, `stopped worker ended by ${how}: ${batchState(worker)}`)
    if (this.#stopping) {
      if (this.#workers.size === 0) await this.#end(ExitCode.ok)
    } else if (this.#active?.replacementHeld) {
      this.#active.replacementHeld = false
      void this.#memory.check()
    }
  }

  /** An unexpected exit: restart, unless unattributed crashes hit the crash-loop limit. */
  async #onCrash(worker: Worker, how: string, charged: boolean): Promise<void> {
    this.#o.log.error({ worker_pid: worker.child.pid, how, suspects_charged: charged }, 'worker crashed')
    let delayMs = 250
    if (!charged && !this.#stopping) {
      // Crashes charged to events are bounded by --max-attempts; only the others count toward a crash loop.
      const crashes = this.#crashes.record(Date.now())
      if (crashes >= this.#crashes.limit) {
        this.failure = `the worker crashed ${crashes} times within ${this.#crashes.windowMs / 1000} s (last: ${how}); giving up`
        this.#o.log.error({ crashes, window_ms: this.#crashes.windowMs }, 'crash loop: giving up')
        this.#stopping = true
        return this.#end(ExitCode.failure)
      }
      delayMs = exponentialDelayMs(crashes, 1000, 30_000)
    }
    return this.#restartAfter(worker, delayMs, 'crash')
  }

  /** Starts a fresh worker after `delayMs` in place of one that ended by itself (unless stopping). */
  async #restartAfter(worker: Worker, delayMs: number, reason: RestartReason): Promise<void> {
    if (this.#active === worker) this.#active = undefined
    if (this.#stopping) {
      if (this.#workers.size === 0) await this.#end(ExitCode.ok)
      return
    }
    this.#restartTimer = setTimeout(() => {
      if (this.#stopping) return
      this.restarts[reason]++
      this.#o.metrics?.recordRestart(reason)
      this.#active = this.#spawn()
      this.#o.log.info({ reason, worker_pid: this.#active.child.pid, restarts: this.restarts }, 'worker restarted')
    }, delayMs)
  }

  async #end(code: number): Promise<void> {
    for (const worker of this.#workers) worker.child.kill('SIGKILL')
    this.#memory.stop()
    clearTimeout(this.#restartTimer)
    await this.#o.crashCharge.close()
    if (this.#o.sampleRss === undefined) await pidusage.clear()
    this.#o.log.info({ code, restarts: this.restarts }, 'supervisor stopped')
    this.#finish(code)
  }
}

/** What became of a stopped worker's work, from what it reported: said truthfully in the logs. */
function batchState(worker: Worker): string {
  if (worker.batch === 'in hand') return 'its batch in hand rolls back, no attempt charged'
  return worker.batch === undefined ? 'it had no batch in hand' : `it had no batch in hand (its last batch ${worker.batch})`
}

function send(worker: Worker, message: SupervisorMessage): void {
  if (worker.child.connected) worker.child.send(message, () => {})
}

/** Which of a worker's overlapping batches an event is in flight in (0: the first or only one). */
type Lane = 0 | 1

/** The ids in flight by the batch they were claimed in: the charge tells a batch of one (maybe a suspect) from a larger one. */
function byLane(inFlight: Map<string, Lane>): string[][] {
  const lanes: string[][] = [[], []]
  for (const [id, lane] of inFlight) lanes[lane]!.push(id)
  return lanes.filter((ids) => ids.length > 0)
}

/**
 * A settled batch's events are no longer suspects: with tenants in flight at once, only its own tenant's; with
 * overlapping batches, only its own lane's (the other batch's events are still in flight).
 */
function forgetSettled(inFlight: Map<string, Lane>, schema: string | undefined, lane: Lane): void {
  for (const [id, of] of inFlight) if (of === lane && (schema === undefined || parseTenantEventId(id).schema === schema)) inFlight.delete(id)
}
