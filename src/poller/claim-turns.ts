/**
 * The claims of overlapping batches take turns: a lane claims only once the other lane's claim is in, so a
 * claim goes out while the other batch waits for its confirms instead of beside the other claim.
 */
export class ClaimTurns {
  #tail: Promise<void> = Promise.resolve()

  /** Resolves when it is this caller's turn, with the function that ends it (safe to call twice). */
  async take(): Promise<() => void> {
    let end!: () => void
    const previous = this.#tail
    this.#tail = new Promise<void>((resolve) => (end = resolve))
    await previous
    return end
  }
}
