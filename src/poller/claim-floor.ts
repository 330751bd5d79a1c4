/**
 * The lowest id the claim of fresh events starts from, so that it does not walk the pending index from its
 * start on every claim.
 *
 * Why: a processed event leaves a dead entry in the pending index until VACUUM removes it, and VACUUM removes
 * nothing while any session holds an older snapshot (a long report, a forgotten BEGIN). Every claim that
 * scans from the start visits each of those entries' heap rows: 300,000 of them cost ~50 ms a claim. Starting
 * from a floor below which no event is claimable skips them.
 *
 * Which floor is safe: when a claim at time T takes fresh events, the first (lowest) of them is F, and no row
 * below F was claimable at T (the claim walks in id order). A row below F may still become claimable later:
 * its inserting transaction commits after T (ids are taken at insert, visibility comes at commit), a batch of
 * another replica rolls back, or `replay` and `resume` return old events to the queue. So:
 * - F becomes the floor only `lagMs` after T: transactions that commit within that time are found in order;
 * - a sweep (a claim from id 0) runs every `sweepMinMs`, or, when a sweep itself is slow (the bloat above),
 *   no more than 1 / `sweepCostShare` of the time: a late straggler waits at most that long, and the sweeps
 *   cost the latency of other events next to nothing;
 * - the caller resets the floor when its own batch rolls back.
 * Retries and suspects have their own index scans, never bounded.
 */
export class ClaimFloor {
  #floor = 0n
  #candidate: { id: bigint; at: number } | undefined
  #nextSweepAt = 0
  readonly #now: () => number
  readonly #lagMs: number
  readonly #sweepMinMs: number
  readonly #sweepCostShare: number

  constructor(options: { now?: () => number; lagMs?: number; sweepMinMs?: number; sweepCostShare?: number } = {}) {
    this.#now = options.now ?? (() => performance.now())
    this.#lagMs = options.lagMs ?? claimFloorDefaults.lagMs
    this.#sweepMinMs = options.sweepMinMs ?? claimFloorDefaults.sweepMinMs
    this.#sweepCostShare = options.sweepCostShare ?? claimFloorDefaults.sweepCostShare
  }

  /** The id the next claim of fresh events starts from (`'0'` for a sweep), as a bigint parameter. */
  next(): { fromId: string; sweep: boolean } {
    const sweep = this.#now() >= this.#nextSweepAt
    return { fromId: sweep ? '0' : this.#floor.toString(), sweep }
  }

  /** After a claim: the lowest fresh id it took (undefined: none), whether it swept, and how long it took. */
  claimed(firstFreshId: string | undefined, sweep: boolean, durationMs: number): void {
    const now = this.#now()
    if (sweep) this.#nextSweepAt = now + Math.max(this.#sweepMinMs, this.#sweepCostShare * durationMs)
    if (firstFreshId === undefined) return
    const id = BigInt(firstFreshId)
    if (this.#candidate === undefined) this.#candidate = { id, at: now }
    else if (now - this.#candidate.at >= this.#lagMs) {
      this.#floor = this.#candidate.id
      this.#candidate = { id, at: now }
    }
  }

  /** Forget the floor: the next claim sweeps (after this poller's own batch rolled back). */
  reset(): void {
    this.#floor = 0n
    this.#candidate = undefined
    this.#nextSweepAt = 0
  }
}

export const claimFloorDefaults = {
  /** How long a claim's lowest fresh id waits before it becomes the floor (ms). */
  lagMs: 1000,
  /** Shortest time between sweeps (ms). */
  sweepMinMs: 1000,
  /** A sweep that took d ms is followed by the next one no sooner than this × d. */
  sweepCostShare: 200,
} as const
