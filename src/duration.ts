import { ConfigError } from './errors.js'

const unitMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/**
 * Parses a duration: a bare number is seconds (decimals allowed, as in `0.25`),
 * or a number with a unit: `250ms`, `30s`, `5m`, `1h`, `7d`. Returns milliseconds.
 * The one parser for every command and every environment variable.
 */
export function parseDuration(text: string, name: string): number {
  const match = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$/.exec(text)
  if (!match) {
    throw new ConfigError(`${name} must be a duration in seconds (0.25) or with a unit (250ms, 30s, 5m, 1h, 7d) (got ${JSON.stringify(text)})`)
  }
  return Math.round(Number(match[1]) * unitMs[match[2] ?? 's']!)
}

/** Formats milliseconds the way `parseDuration` reads them back: `250ms`, `30s`, `1h`. */
export function formatDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    if (ms >= unitMs[unit]! && ms % unitMs[unit]! === 0) return `${ms / unitMs[unit]!}${unit}`
  }
  return ms >= 1000 ? `${ms / 1000}s` : `${ms}ms`
}
