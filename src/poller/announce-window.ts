import type { ClaimedEvent } from './claimed-event.js'

/** The `beforeDispatch` hook: see PollerOptions. */
export type AnnounceHook = (ids: string[], finished: string[]) => void | Promise<void>

/**
 * Announces a batch's events to the hook in windows, ahead of the dispatch, so that after a crash the
 * suspects are the events in flight and a window, not the whole batch. A window starts at `minSize` events
 * (the concurrency); it doubles each time the dispatch has to wait for an announcement (fast handlers: fewer
 * calls) and halves back after four batches in a row that never waited. Kept from batch to batch.
 */
export class AnnounceWindow {
  #size: number
  #calm = 0

  constructor(
    private readonly hook: AnnounceHook,
    private readonly minSize: number,
  ) {
    this.#size = minSize
  }

  /** Announcements for one batch. */
  open(rows: readonly ClaimedEvent[], onFailure: (error: unknown) => void): BatchAnnouncements {
    return new BatchAnnouncements(rows, this.hook, this.#size, onFailure)
  }

  /** Adapts the window to how the batch went. */
  close(batch: BatchAnnouncements): void {
    this.#calm = batch.waited ? 0 : this.#calm + 1
    if (batch.waited) this.#size = batch.size
    else if (this.#calm % 4 === 0) this.#size = Math.max(this.minSize, this.#size >> 1)
  }
}

export class BatchAnnouncements {
  /** Rows [0, announced) were handed to the hook; [0, confirmed) may start. */
  #announced = 0
  #confirmed = 0
  #pending: Promise<void> = Promise.resolve()
  #finished: string[] = []
  /** The dispatch had to wait for an announcement after the first. */
  waited = false

  constructor(
    private readonly rows: readonly ClaimedEvent[],
    private readonly hook: AnnounceHook,
    /** Events per announcement; doubled whenever the dispatch catches up with the announcements. */
    public size: number,
    private readonly onFailure: (error: unknown) => void,
  ) {}

  /**
   * Call before starting the event at `index` (in order). Undefined when it may start now (no microtask);
   * otherwise a promise that resolves once it may. The next window goes out when the dispatch reaches the
   * middle of the current one, so it is usually confirmed before it is needed.
   */
  ready(index: number): Promise<void> | undefined {
    if (this.#announced < this.rows.length && index >= this.#announced - (this.size >> 1)) this.#announce()
    if (index < this.#confirmed) return undefined
    if (this.#confirmed > 0) {
      // waiting for the first window is not waiting behind the dispatch; waiting for a later one is
      if (!this.waited || index === this.#confirmed) this.size = Math.min(this.size * 2, 10_000)
      this.waited = true
    }
    return this.#pending
  }

  /** Rows [0, confirmed) may start: a batch handler takes them together once `ready` resolved. */
  get confirmed(): number {
    return this.#confirmed
  }

  /** The event's handlers all ended. */
  finished(id: string): void {
    this.#finished.push(id)
  }

  /**
   * Tells the hook now which events finished, announcing none: a batch that shares its transaction with other
   * outboxes' batches (tenants/shared-turn.ts) is over before that transaction commits, and its events must not
   * count as in flight while the next batch runs. A failure is ignored: every handler of the batch has ended.
   */
  flush(): Promise<void> {
    return (this.#pending = this.#pending.then(async () => {
      const finished = this.#finished
      this.#finished = []
      if (finished.length > 0) await Promise.resolve(this.hook([], finished)).catch(() => {})
    }))
  }

  #announce(): void {
    const end = Math.min(this.rows.length, this.#announced + this.size)
    const ids: string[] = []
    for (let i = this.#announced; i < end; i++) ids.push(this.rows[i]!.id)
    this.#announced = end
    this.#pending = this.#pending.then(async () => {
      const finished = this.#finished
      this.#finished = []
      try {
        await this.hook(ids, finished)
        this.#confirmed = end
      } catch (error) {
        this.onFailure(error) // the batch stops: nothing it has not announced may start
      }
    })
  }
}
