import type { ChildProcess } from 'node:child_process'
import pidusage from 'pidusage'
import type { Sql } from 'postgres'
import type { ResolvedOptions } from '../poller/poller-options.js'
import { applicationName, connect } from '../database/connect.js'
import { errorMessage } from '../errors.js'
import { outboxTable } from '../outbox/outbox-table.js'
import { outboxChargeCrash, outboxQueries } from '../poller/outbox-queries.js'
import type { OutboxMetrics } from '../observe/metrics.js'
import type { Logger } from '../types.js'
import type { RestartReason, SupervisorMessage, WorkerMessage } from './worker-protocol.js'

export interface SupervisorOptions {
  options: ResolvedOptions
  connectionString: string
  /** Starts one worker process with an IPC channel (the CLI forks itself with --no-supervise). */
  spawnWorker: () => ChildProcess
  log: Logger
  /** Fed with the workers' batch reports, RSS samples and restarts, when HTTP metrics are served. */
  metrics?: OutboxMetrics
}

/** Exit codes the supervisor ends with. */
export const SupervisorExit = { ok: 0, crashLoop: 1, startFailure: 1, workerConfigError: 2 } as const

interface Worker {
  child: ChildProcess
  startedAt: number
  /** Ids the worker announced and has not reported finished: the suspects if it dies now. */
  inFlight: Set<string>
  /** The worker's batch, as it reported it: being handled, or how the last one ended. */
  batch?: 'in hand' | 'committed' | 'rolled back'
  ready: boolean
  /** When the worker last reported its loop alive (ms since the epoch). */
  lastLoopAt: number
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
  readonly #o: SupervisorOptions
  readonly #workers = new Set<Worker>()
  readonly #crashes: number[] = []
  #active: Worker | undefined
  #memoryTimer: NodeJS.Timeout | undefined
  #restartTimer: NodeJS.Timeout | undefined
  #stopping = false
  #sql: Sql | undefined
  #finish!: (code: number) => void

  constructor(options: SupervisorOptions) {
    this.#o = options
    this.done = new Promise((resolve) => (this.#finish = resolve))
  }

  /** When the active worker's loop last reported in (0: none yet): for /healthz. */
  get lastLoopAt(): number {
    return this.#active?.lastLoopAt ?? 0
  }

  /** A worker is polling: for /readyz. */
  get ready(): boolean {
    return this.#active?.ready === true && !this.#stopping
  }

  start(): void {
    this.#active = this.#spawn()
    this.#memoryTimer = setInterval(() => void this.#checkMemory(), this.#o.options.memoryCheckIntervalMs)
  }

  /** Rolling restart (SIGHUP): a fresh worker starts while the old one finishes its batch. */
  reload(): void {
    if (!this.#stopping) this.#replace('reload')
  }

  /** Graceful: drain every worker, then finish with exit code 0. `force`: workers roll back at once. */
  stop(options: { force?: boolean } = {}): void {
    this.#stopping = true
    clearInterval(this.#memoryTimer)
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
    if (this.#workers.size === 0) void this.#end(SupervisorExit.ok)
  }

  #spawn(): Worker {
    const child = this.#o.spawnWorker()
    const worker: Worker = { child, startedAt: Date.now(), inFlight: new Set(), ready: false, lastLoopAt: 0 }
    this.#workers.add(worker)
    child.on('message', (message: WorkerMessage) => {
      if (message.type === 'dispatching') {
        worker.batch = 'in hand'
        for (const id of message.ids) worker.inFlight.add(id)
        for (const id of message.finished) worker.inFlight.delete(id)
      } else if (message.type === 'settled') {
        worker.inFlight.clear()
        worker.batch = message.report.committed ? 'committed' : 'rolled back'
        worker.lastLoopAt = Date.now()
        this.#o.metrics?.recordBatch(message.report)
      } else if (message.type === 'heartbeat') worker.lastLoopAt = Date.now()
      else if (message.type === 'ready') {
        worker.ready = true
        worker.lastLoopAt = Date.now()
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

  async #checkMemory(): Promise<void> {
    const worker = this.#active
    if (worker?.child.pid === undefined || worker.retiring !== undefined) return
    try {
      const { memory } = await pidusage(worker.child.pid)
      this.#o.metrics?.setWorkerRss(memory)
      const limit = this.#o.options.memoryLimitMb * 1024 * 1024
      if (memory > limit && this.#active === worker && !this.#stopping) {
        if (this.#workers.size > 1) {
          // One retiree at a time: its exit checks again at once (a fresh worker beside two draining ones
          // could hold three batches in memory).
          if (!worker.replacementHeld) this.#o.log.warn({ worker_pid: worker.child.pid, rss_mb: Math.round(memory / 1048576), limit_mb: this.#o.options.memoryLimitMb }, 'worker over its memory limit: replacing it once the previous worker has exited')
          worker.replacementHeld = true
          return
        }
        this.#o.log.warn({ worker_pid: worker.child.pid, rss_mb: Math.round(memory / 1048576), limit_mb: this.#o.options.memoryLimitMb }, 'worker over its memory limit: draining it and starting a fresh one')
        this.#replace('memory')
      }
    } catch {
      // the worker exited between the check and the sample; its exit handler takes over
    }
  }

  async #onExit(worker: Worker, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    clearTimeout(worker.drainTimer)
    this.#workers.delete(worker)
    const pid = worker.child.pid
    const how = signal !== null ? `signal ${signal}` : `exit code ${code}`
    this.#o.log.info({ worker_pid: pid, code, signal }, 'worker exited')
    if (worker.retiring === undefined) {
      if (!worker.ready && (code === SupervisorExit.workerConfigError || code === SupervisorExit.startFailure)) {
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
      return this.#onCrash(worker, how, await this.#chargeCrash(worker, `worker died (${how}) while handling this event`))
    }
    // A worker we were stopping (and killed after --drain-timeout or a forced stop) charges nothing:
    // a stop never costs an event an attempt.
    if (code !== 0 || worker.killedAfterDrainTimeout) this.#o.log.warn({ worker_pid: pid, how }, `stopped worker ended by ${how}: ${batchState(worker)}`)
    if (this.#stopping) {
      if (this.#workers.size === 0) await this.#end(SupervisorExit.ok)
    } else if (this.#active?.replacementHeld) {
      this.#active.replacementHeld = false
      void this.#checkMemory()
    }
  }

  /** An unexpected exit: restart, unless unattributed crashes hit the crash-loop limit. */
  async #onCrash(worker: Worker, how: string, charged: boolean): Promise<void> {
    this.#o.log.error({ worker_pid: worker.child.pid, how, suspects_charged: charged }, 'worker crashed')
    let delayMs = 250
    if (!charged && !this.#stopping) {
      // Crashes charged to events are bounded by --max-attempts; only the others count toward a crash loop.
      const now = Date.now()
      this.#crashes.push(now)
      while (this.#crashes.length > 0 && this.#crashes[0]! < now - this.#o.options.crashWindowMs) this.#crashes.shift()
      if (this.#crashes.length >= this.#o.options.crashLimit) {
        this.failure = `the worker crashed ${this.#crashes.length} times within ${this.#o.options.crashWindowMs / 1000} s (last: ${how}); giving up`
        this.#o.log.error({ crashes: this.#crashes.length, window_ms: this.#o.options.crashWindowMs }, 'crash loop: giving up')
        this.#stopping = true
        clearInterval(this.#memoryTimer)
        return this.#end(SupervisorExit.crashLoop)
      }
      delayMs = Math.min(1000 * 2 ** (this.#crashes.length - 1), 30_000)
    }
    return this.#restartAfter(worker, delayMs, 'crash')
  }

  /** Starts a fresh worker after `delayMs` in place of one that ended by itself (unless stopping). */
  async #restartAfter(worker: Worker, delayMs: number, reason: RestartReason): Promise<void> {
    if (this.#active === worker) this.#active = undefined
    if (this.#stopping) {
      if (this.#workers.size === 0) await this.#end(SupervisorExit.ok)
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

  /** Records a failed attempt against the events the dead worker was handling and marks them suspect. */
  async #chargeCrash(worker: Worker, error: string): Promise<boolean> {
    if (worker.inFlight.size === 0) return false
    const { schema, table, maxAttempts } = this.#o.options
    this.#sql ??= connect(this.#o.connectionString, { max: 1, applicationName: applicationName('supervisor') })
    try {
      const { charged, dead } = await outboxChargeCrash(this.#sql, outboxQueries(outboxTable(schema, table)), [...worker.inFlight], error, maxAttempts)
      this.#o.log.warn({ worker_pid: worker.child.pid, suspects: charged.length }, 'charged the events the dead worker had in flight: they are retried one at a time')
      for (const event of dead) {
        this.#o.log.error({ id: event.id, event_type: event.event_type, error }, 'event dead-lettered: it kept killing the worker')
        this.#o.metrics?.recordDead(event.event_type, 1)
      }
      return charged.length > 0
    } catch (cause) {
      this.#o.log.error({ error: errorMessage(cause) }, 'could not record the crash against its events')
      return false
    }
  }

  async #end(code: number): Promise<void> {
    for (const worker of this.#workers) worker.child.kill('SIGKILL')
    clearInterval(this.#memoryTimer)
    clearTimeout(this.#restartTimer)
    await this.#sql?.end({ timeout: 5 })
    this.#sql = undefined
    await pidusage.clear()
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
