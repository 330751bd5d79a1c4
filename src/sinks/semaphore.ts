/**
 * Bounds the messages a sink has in flight (published, not yet confirmed). Waiters are served in order; a
 * waiter whose signal aborts (its handler timed out) leaves the queue instead of taking slots later.
 */
export class Semaphore {
  #available: number
  readonly #waiters: Array<{ count: number; grant: () => void }> = []

  constructor(private readonly limit: number) {
    this.#available = limit
  }

  /** Resolves when `count` slots (at most the limit) are taken; call `release(count)` once for them. */
  acquire(signal?: AbortSignal, count = 1): Promise<void> {
    if (count > this.limit) throw new RangeError(`cannot take ${count} of ${this.limit} slots`)
    if (this.#available >= count && this.#waiters.length === 0) {
      this.#available -= count
      return Promise.resolve()
    }
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        count,
        grant: () => {
          signal?.removeEventListener('abort', onAbort)
          resolve()
        },
      }
      const onAbort = () => {
        const index = this.#waiters.indexOf(waiter)
        if (index >= 0) this.#waiters.splice(index, 1)
        this.#grant() // a large waiter leaving may let smaller ones behind it through
        reject(signal!.reason)
      }
      if (signal?.aborted) return reject(signal.reason)
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#waiters.push(waiter)
    })
  }

  release(count = 1): void {
    this.#available += count
    this.#grant()
  }

  #grant(): void {
    while (this.#waiters.length > 0 && this.#waiters[0]!.count <= this.#available) {
      const next = this.#waiters.shift()!
      this.#available -= next.count
      next.grant()
    }
  }
}
