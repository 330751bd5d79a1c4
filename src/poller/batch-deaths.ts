/** What to do about a batch that died: its events all rolled back. */
export interface Death {
  /** Events to charge an attempt and mark suspect (so they are retried alone). */
  charge: string[]
}

/**
 * Keeps an outbox moving when its batches keep dying (the server kills the connection or cancels a
 * statement before the batch commits): each death halves the next batch (down to one event), each commit
 * doubles it back toward `batchSize`. A single death charges nobody (a restart or a network blip is not the
 * events' fault); a second death in a row, or the death of a suspect batch, charges the events that were
 * running when it died, so the culprit is isolated and, dying every time, dead-lettered after its attempts.
 */
export class BatchDeaths {
  #batchSize: number
  #inARow = 0

  constructor(private readonly maxBatchSize: number) {
    this.#batchSize = maxBatchSize
  }

  /** How many events the next claim may take. */
  get batchSize(): number {
    return this.#batchSize
  }

  died(suspect: boolean, running: readonly string[]): Death {
    this.#inARow++
    this.#batchSize = Math.max(1, this.#batchSize >> 1)
    return { charge: suspect || this.#inARow > 1 ? [...running] : [] }
  }

  committed(): void {
    this.#inARow = 0
    this.#batchSize = Math.min(this.maxBatchSize, this.#batchSize * 2)
  }
}
