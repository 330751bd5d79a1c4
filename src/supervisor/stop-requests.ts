import type { Logger } from '../types.js'

/**
 * How a worker answers stop requests: the first drains (stop claiming, finish and commit the batch in hand);
 * a forced one — a second OS signal, or the supervisor's explicit force — aborts the handlers and rolls back.
 * A drain request arriving with a signal (Ctrl-C and systemd signal the worker and the supervisor at once)
 * still drains: a stop never charges an attempt.
 */
export class StopRequests {
  #draining = false
  #signals = 0

  constructor(
    private readonly poller: { stop(options?: { force?: boolean }): Promise<void> },
    private readonly log: Logger,
    /** Called on a forced stop, after the poller was told: the CLI arms its exit watchdog. */
    private readonly onForce: () => void = () => {},
  ) {}

  /** An OS signal: the first drains, the next forces. */
  signal(name: string): void {
    this.request(name, ++this.#signals > 1)
  }

  request(why: string, force = false): void {
    if (force) {
      this.log.warn({ why }, 'forcing stop: the batch in hand rolls back')
      void this.poller.stop({ force: true })
      this.onForce()
    } else if (!this.#draining) {
      this.#draining = true
      this.log.info({ why }, 'stopping: finishing the batch in hand')
      void this.poller.stop()
    }
  }
}
