import { ConfigError } from './errors.js'

const unitBytes: Record<string, number> = { '': 1, b: 1, kb: 1024, kib: 1024, mb: 1024 ** 2, mib: 1024 ** 2, gb: 1024 ** 3, gib: 1024 ** 3 }

/**
 * Parses a size in bytes: a bare integer (`1048576`), or a number with a unit, as PostgreSQL writes them
 * (`512kB`, `64MB`, `1GB`; powers of 1024, any case, `KiB`/`MiB`/`GiB` too). Returns bytes.
 */
export function parseByteSize(text: string, name: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text)
  const unit = match ? unitBytes[match[2]!.toLowerCase()] : undefined
  if (!match || unit === undefined || (match[2] === '' && match[1]!.includes('.'))) {
    throw new ConfigError(`${name} must be a size in bytes (1048576) or with a unit (512kB, 64MB, 1GB) (got ${JSON.stringify(text)})`)
  }
  return Math.round(Number(match[1]) * unit)
}

/** Formats bytes the way `parseByteSize` reads them back: `64MB`, `512kB`, `1000`. */
export function formatByteSize(bytes: number): string {
  for (const [unit, size] of [['GB', 1024 ** 3], ['MB', 1024 ** 2], ['kB', 1024]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`
  }
  return String(bytes)
}
