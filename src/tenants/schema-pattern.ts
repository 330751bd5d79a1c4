import { ConfigError } from '../errors.js'

/**
 * Schema patterns of `--schemas`: a schema name where `*` stands for any run of characters (the only
 * wildcard: `_` and `%` are literal, as in the names they match). `tenant_*`, `admin`, `*_eu`.
 */
export function parseSchemaPatterns(input: string | readonly string[], name: string): string[] {
  const patterns = (typeof input === 'string' ? [input] : [...input]).flatMap((item) => item.split(/[\s,]+/)).filter((item) => item.length > 0)
  if (patterns.length === 0) throw new ConfigError(`${name} needs at least one schema pattern, e.g. 'tenant_*' (got ${JSON.stringify(input)})`)
  for (const pattern of patterns) {
    if (Buffer.byteLength(pattern) > 63 || pattern.includes('\0')) throw new ConfigError(`${name}: a schema pattern is at most 63 bytes (got ${JSON.stringify(pattern)})`)
  }
  return [...new Set(patterns)]
}

/** The pattern as a LIKE pattern with the default escape character: `*` → `%`, every other character literal. */
export function schemaPatternToLike(pattern: string): string {
  return pattern.replace(/[\\%_]/g, (char) => `\\${char}`).replaceAll('*', '%')
}

/** Whether `schema` matches `pattern`: the same rule as the LIKE form, for the library's own checks and tests. */
export function schemaMatches(pattern: string, schema: string): boolean {
  const parts = pattern.split('*')
  if (parts.length === 1) return pattern === schema
  const first = parts[0]!
  const last = parts.at(-1)!
  if (schema.length < first.length + last.length || !schema.startsWith(first) || !schema.endsWith(last)) return false
  let at = first.length
  const end = schema.length - last.length
  for (const middle of parts.slice(1, -1)) {
    const found = schema.indexOf(middle, at)
    if (found < 0 || found + middle.length > end) return false
    at = found + middle.length
  }
  return true
}
