import type { Sql } from 'postgres'
import { type DatabaseSession, describeTarget, openDatabase } from '../database/connect.js'
import { errorMessage } from '../errors.js'
import type { Logger } from '../types.js'

/** What a poller does at each step of its lifecycle (see PollerLifecycle). */
export interface LifecycleSteps {
  /** Aborts the handlers in flight; the batch in hand rolls back whole. */
  force(): void
  /** Ends the loop's sleep, so it sees the stop at once. */
  wake(): void
  /** Closes what the poller opened; also after a start that failed half-way. */
  close(): Promise<void>
  /** After close: the one log line of a stopped poller. */
  stopped(): void
}

/**
 * start() and stop() of a poller, each callable twice, in the fixed order: stop claiming → finish the batch in
 * hand (forced after `timeoutMs`) → close. `done` settles when the loop has ended and rejects if it died of an
 * unexpected error. A single-outbox and a multi-tenant poller differ only in the steps.
 */
export class PollerLifecycle {
  readonly done: Promise<void>
  readonly #steps: LifecycleSteps
  #starting: Promise<void> | undefined
  #stopping: Promise<void> | undefined
  #stopRequested = false
  #resolveDone!: () => void
  #rejectDone!: (error: unknown) => void

  constructor(steps: LifecycleSteps) {
    this.#steps = steps
    this.done = new Promise((resolve, reject) => {
      this.#resolveDone = resolve
      this.#rejectDone = reject
    })
    this.done.catch(() => {}) // observed through start()/stop() callers; never an unhandled rejection
  }

  get stopRequested(): boolean {
    return this.#stopRequested
  }

  /** Runs `open` (connect, check), then `loop` until it ends; when `open` fails, what it opened is closed and the error thrown. */
  start(open: () => Promise<void>, loop: () => Promise<void>): Promise<void> {
    return (this.#starting ??= this.#start(open, loop))
  }

  async #start(open: () => Promise<void>, loop: () => Promise<void>): Promise<void> {
    try {
      await open()
    } catch (error) {
      await this.#steps.close()
      this.#resolveDone() // nothing runs: a later stop() returns at once
      throw error
    }
    loop().then(this.#resolveDone, this.#rejectDone)
  }

  stop(options: { force?: boolean; timeoutMs?: number }, drainTimeoutMs: number): Promise<void> {
    if (options.force) this.#steps.force()
    this.#stopRequested = true
    this.#steps.wake()
    return (this.#stopping ??= this.#stop(options.timeoutMs ?? drainTimeoutMs))
  }

  async #stop(timeoutMs: number): Promise<void> {
    if (this.#starting === undefined) return this.#resolveDone()
    await this.#starting.catch(() => {})
    const timer = setTimeout(() => this.#steps.force(), timeoutMs)
    timer.unref()
    try {
      await this.done
    } finally {
      clearTimeout(timer)
      await this.#steps.close()
      this.#steps.stopped()
    }
  }
}

/** A poller's own one-connection pool, retrying an unreachable database for `connectTimeoutMs`, each retry logged. */
export function openPollerDatabase(url: string, setup: { applicationName: string; connectTimeoutMs: number; log: Logger }, onclose?: () => void): Promise<{ sql: Sql; session: DatabaseSession }> {
  const target = describeTarget(url)
  return openDatabase(url, { max: 1, applicationName: setup.applicationName, onclose }, setup.connectTimeoutMs, (error, delayMs) =>
    setup.log.warn({ target, error: errorMessage(error), retry_in_ms: delayMs }, 'database unreachable, retrying'),
  )
}
