/**
 * Delay before the next attempt after `failedAttempts` failures: exponential from `baseMs`, capped at
 * `maxMs`, with "equal jitter" (half fixed, half random) so replicas retrying together spread out.
 */
export function retryDelayMs(failedAttempts: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const exponential = Math.min(maxMs, baseMs * 2 ** Math.min(failedAttempts - 1, 40))
  return Math.round(exponential / 2 + (exponential / 2) * random())
}
