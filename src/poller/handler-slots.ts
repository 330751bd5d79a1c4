/**
 * Room for `size` events' handlers at once, shared by the batches of one transaction (tenants/shared-turn.ts):
 * `--concurrency` bounds the handlers on a claim connection, however many tenants' batches run on it. Taken
 * first come first served, so a tenant's one event waits for one handler of a 250-event batch, not for the batch.
 */
export class HandlerSlots {
  #free: number
  readonly #waiting: Array<() => void> = []

  constructor(size: number) {
    this.#free = size
  }

  /** Undefined when a slot was free (taken now: no microtask), else resolves once one is handed over. */
  take(): Promise<void> | undefined {
    if (this.#free > 0 && this.#waiting.length === 0) {
      this.#free--
      return undefined
    }
    return new Promise((resolve) => this.#waiting.push(resolve))
  }

  /** A slot taken is free again: to the longest waiter, if any. */
  give(): void {
    const next = this.#waiting.shift()
    if (next === undefined) this.#free++
    else next()
  }
}
