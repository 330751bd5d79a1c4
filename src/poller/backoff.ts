/** Longest wait between claims while they keep failing. */
export const errorDelayMaxMs = 30_000

/**
 * Exponential backoff, the one place it is computed. Steps count from 1: step 1 waits `baseMs`, each
 * further step twice as long, never more than `maxMs`. Callers keep a step counter (a number, no object),
 * so a loop that backs off allocates nothing.
 */
export function exponentialDelayMs(step: number, baseMs: number, maxMs: number): number {
  // the exponent is bounded so a long outage cannot overflow to Infinity
  return Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(step, 1) - 1, 40))
}

/**
 * The exponential delay of `step` with "equal jitter" (half fixed, half random), so replicas or
 * connections retrying together spread out. `random` is a seam for tests.
 */
export function jitteredDelayMs(step: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const exponential = exponentialDelayMs(step, baseMs, maxMs)
  return Math.round(exponential / 2 + (exponential / 2) * random())
}
