import type { ResolvedOptions } from '../poller/poller-options.js'

/** How long a healthy worker's poll loop may go without reporting, by what it reported last. */
export interface LoopAllowances {
  /** From the worker's start to its first poll: it retries an unreachable database for `connectTimeout`. */
  readonly startingMs: number
  /**
   * After a claim that worked: an idle loop sleeps up to `intervalMax`; a batch reports each window of
   * events before it starts them, and no statement of a batch outlives the drain timeout (its
   * statement_timeout), which is above the handler timeout.
   */
  readonly pollingMs: number
  /**
   * After a claim that failed (a database outage is not a hang): the poller backs off up to 30 s between
   * failed claims, and the next claim and the probe before it each wait up to postgres.js's reconnect delay (1 s)
   * and connect_timeout (10 s) for an unreachable server (poller.ts, database/connect.ts).
   */
  readonly failingMs: number
}

const marginMs = 5_000
const failedClaimBackoffMaxMs = 30_000
const connectAttemptMaxMs = 1_000 + 10_000

export function loopAllowances(poller: Pick<ResolvedOptions, 'connectTimeoutMs' | 'intervalMaxMs' | 'drainTimeoutMs'>): LoopAllowances {
  const pollingMs = Math.max(poller.intervalMaxMs, poller.drainTimeoutMs) + marginMs
  return Object.freeze({
    startingMs: poller.connectTimeoutMs + 2 * marginMs,
    pollingMs,
    failingMs: pollingMs + failedClaimBackoffMaxMs + 2 * connectAttemptMaxMs,
  })
}

/**
 * Whether one worker's poll loop keeps iterating: fed with every claim, whether it succeeded or failed (and
 * every window of events a batch starts), and judged against the allowances. What the systemd watchdog
 * pings on.
 */
export class LoopLiveness {
  readonly #startedAt: number
  #lastLoopAt = 0
  #claimFailed = false

  constructor(now = Date.now()) {
    this.#startedAt = now
  }

  /** When the loop last reported (ms since the epoch); 0 before its first claim. */
  get lastLoopAt(): number {
    return this.#lastLoopAt
  }

  /** The loop claimed (`claimFailed`: and the claim or its batch failed), or started a window of events. */
  iterated(claimFailed: boolean, now = Date.now()): void {
    this.#lastLoopAt = now
    this.#claimFailed = claimFailed
  }

  alive(allowances: LoopAllowances, now = Date.now()): boolean {
    if (this.#lastLoopAt === 0) return now - this.#startedAt <= allowances.startingMs
    return now - this.#lastLoopAt <= (this.#claimFailed ? allowances.failingMs : allowances.pollingMs)
  }
}
