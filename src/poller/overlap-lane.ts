import type { Sql } from 'postgres'
import { errorDelayMaxMs, exponentialDelayMs } from './backoff.js'
import type { BatchResult, BatchRunner } from './run-batch.js'
import type { ClaimTurns } from './claim-turns.js'

/**
 * The second batch in flight of a poller that relays only to Redis or RabbitMQ (see PollerOptions.overlap). While one batch waits for its
 * confirms, the other claims, publishes and settles: each in its own transaction on its own connection, each
 * committed only once its own confirms are back, so a crash rolls back both and no unconfirmed event is ever
 * marked processed. The claims take turns (ClaimTurns). This lane runs only while the poller's first lane
 * finds events: the first alone listens, backs off when idle and waits out outages; this one waits for it.
 */
export class OverlapLane {
  #busy = signal()
  #stopping = false
  /** Ends the error backoff's sleep, while one runs. */
  #wake: (() => void) | undefined

  constructor(
    private readonly batches: BatchRunner,
    private readonly connection: Sql,
    private readonly turns: ClaimTurns,
    private readonly intervalMinMs: number,
    /** After each batch that claimed events: the first lane's idle sleep ends. */
    private readonly claimedSome: () => void,
  ) {}

  /** The first lane's batch had events to handle: this lane claims too. */
  busy(): void {
    this.#busy.resolve()
  }

  /** No further claim; a sleep ends at once. The batch in hand still finishes (or is forced by the runner). */
  stop(): void {
    this.#stopping = true
    this.#busy.resolve()
    this.#wake?.()
  }

  /** Forced stop: the batch in hand is aborted and rolls back whole. */
  force(): void {
    this.batches.force()
  }

  /** Claim → publish → settle while the first lane finds events, until stopped. */
  async run(): Promise<void> {
    let errorSteps = 0
    let deferrals = 0
    while (!this.#stopping) {
      await this.#busy.promise
      if (this.#stopping) break
      const endTurn = await this.turns.take()
      if (this.#stopping) {
        endTurn()
        break
      }
      let batch: BatchResult
      try {
        batch = await this.batches.run(this.connection, deferrals, endTurn)
        errorSteps = 0
      } catch (error) {
        endTurn()
        const delayMs = exponentialDelayMs(++errorSteps, this.intervalMinMs, errorDelayMaxMs)
        await this.batches.recover(this.connection, error, delayMs)
        await this.#sleep(delayMs)
        continue
      }
      endTurn()
      if (batch.deferred !== undefined) deferrals = batch.deferred === 'none' ? 0 : deferrals + 1
      // a claim that skipped the suspects came back empty: the next one may take a suspect at once
      if (batch.claimed === 0 && batch.skippedSuspects) continue
      // nothing to claim, or an outage: wait until the first lane finds events it can handle again
      if (batch.claimed === 0 || batch.deferred === 'all') this.#busy = signal()
      else this.claimedSome()
    }
  }

  #sleep(ms: number): Promise<void> {
    if (this.#stopping) return Promise.resolve()
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.#wake = undefined
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.#wake = done
    })
  }
}

function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>((r) => (resolve = r))
  return { promise, resolve }
}
