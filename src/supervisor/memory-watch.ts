/** What a memory watch samples and what it does with the sample. */
export interface MemoryWatchSetup<Target> {
  limitMb: number
  intervalMs: number
  /** The process to sample now; undefined: nothing to sample this time (none, or already being replaced). */
  target: () => Target | undefined
  /** Its resident set size in bytes; a rejection (the process exited meanwhile) skips the sample. */
  rss: (target: Target) => number | Promise<number>
  /** Every sample, for the RSS gauge. */
  onSample?: (rssBytes: number) => void
  /** The sample was over the limit. */
  onOver: (target: Target, rssMb: number) => void
}

/**
 * Samples a process's RSS every `intervalMs` against the limit: the supervisor watches its worker (by pid),
 * a worker run alone watches itself. The timer never keeps the process alive.
 */
export class MemoryWatch<Target> {
  readonly #setup: MemoryWatchSetup<Target>
  #timer: NodeJS.Timeout | undefined

  constructor(setup: MemoryWatchSetup<Target>) {
    this.#setup = setup
  }

  start(): void {
    this.#timer ??= setInterval(() => void this.check(), this.#setup.intervalMs).unref()
  }

  stop(): void {
    clearInterval(this.#timer)
  }

  /** One sample now (also what the timer runs). */
  async check(): Promise<void> {
    const target = this.#setup.target()
    if (target === undefined) return
    let rss: number
    try {
      rss = await this.#setup.rss(target)
    } catch {
      return // the process exited between the check and the sample; its exit handler takes over
    }
    this.#setup.onSample?.(rss)
    if (rss > this.#setup.limitMb * 1_048_576) this.#setup.onOver(target, Math.round(rss / 1_048_576))
  }
}
