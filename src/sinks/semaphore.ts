/**
 * Bounds the messages a sink has in flight (published, not yet confirmed). Waiters are served in order; a
 * waiter whose signal aborts (its handler timed out) leaves the queue instead of taking a slot later.
 */
export class Semaphore {
  #available: number
  readonly #waiters: Array<{ grant: () => void }> = []

  constructor(limit: number) {
    this.#available = limit
  }

  /** Resolves when a slot is taken; call `release()` once for each. */
  acquire(signal?: AbortSignal): Promise<void> {
    if (this.#available > 0 && this.#waiters.length === 0) {
      this.#available--
      return Promise.resolve()
    }
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort)
          resolve()
        },
      }
      const onAbort = () => {
        const index = this.#waiters.indexOf(waiter)
        if (index >= 0) this.#waiters.splice(index, 1)
        reject(signal!.reason)
      }
      if (signal?.aborted) return reject(signal.reason)
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#waiters.push(waiter)
    })
  }

  release(): void {
    const next = this.#waiters.shift()
    if (next !== undefined) next.grant()
    else this.#available++
  }
}
