import { jitteredDelayMs } from '../poller/backoff.js'
import type { Logger } from '../types.js'

/** How long an unavailable sink waits before it tries again after `failures` failures in a row: 0.5 s doubling to 30 s, jittered. */
export function outageRetryDelayMs(failures: number): number {
  return jitteredDelayMs(failures, 500, 30_000)
}

/**
 * Logs a sink's outage once: a warning when it becomes unavailable, one info line when it is back. Events
 * deferred in between log nothing, so a ten-minute outage is two lines, not one per event per retry.
 */
export class OutageLog {
  #downSince: number | undefined

  constructor(
    private readonly log: Logger,
    private readonly sink: string,
  ) {}

  get isDown(): boolean {
    return this.#downSince !== undefined
  }

  /** Records the outage; logs only if it just began. */
  down(reason: string): void {
    if (this.#downSince !== undefined) return
    this.#downSince = Date.now()
    this.log.warn({ sink: this.sink, error: reason }, 'sink unavailable: its events wait, no attempt charged, reconnecting in the background')
  }

  /** Records the recovery; logs only if there was an outage. */
  up(): void {
    if (this.#downSince === undefined) return
    this.log.info({ sink: this.sink, down_ms: Date.now() - this.#downSince }, 'sink available again')
    this.#downSince = undefined
  }
}
