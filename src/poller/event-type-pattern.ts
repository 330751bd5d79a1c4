import type { PendingQuery, Row, Sql } from 'postgres'
import { ConfigError } from '../errors.js'

/**
 * An event-type pattern as handlers use them: an exact type (`issue.created`), a prefix wildcard
 * (`issue.*` matches `issue.created` and `issue.comment.added`) or `*` for every type.
 */
export type EventTypePattern = { kind: 'all' } | { kind: 'exact'; type: string } | { kind: 'prefix'; prefix: string }

/** Reads a pattern; anything else is a ConfigError naming `name` (the flag or option it came from). */
export function parseEventTypePattern(pattern: string, name = 'type pattern'): EventTypePattern {
  if (pattern === '*') return { kind: 'all' }
  if (/^[^*]+\.\*$/.test(pattern)) return { kind: 'prefix', prefix: pattern.slice(0, -1) }
  if (pattern !== '' && !pattern.includes('*')) return { kind: 'exact', type: pattern }
  throw new ConfigError(`${name} must be an event type, 'prefix.*' or '*' (got ${JSON.stringify(pattern)})`)
}

/**
 * The pattern as a condition on `event_type`, its value a query parameter. `starts_with` rather than
 * LIKE, so `%` and `_` in a type mean themselves.
 */
export function eventTypeCondition(sql: Sql, pattern: string | undefined, name?: string): PendingQuery<Row[]> {
  const parsed = parseEventTypePattern(pattern ?? '*', name)
  switch (parsed.kind) {
    case 'all':
      return sql`true`
    case 'exact':
      return sql`event_type = ${parsed.type}`
    case 'prefix':
      return sql`starts_with(event_type, ${parsed.prefix})`
  }
}
