import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import { parseEventTypePattern } from '../../src/poller/event-type-pattern.js'
import { HandlerRegistry } from '../../src/poller/handler-registry.js'

describe('event-type patterns', () => {
  it('reads an exact type, a prefix wildcard and *', () => {
    expect(parseEventTypePattern('issue.created')).toEqual({ kind: 'exact', type: 'issue.created' })
    expect(parseEventTypePattern('issue.*')).toEqual({ kind: 'prefix', prefix: 'issue.' })
    expect(parseEventTypePattern('*')).toEqual({ kind: 'all' })
  })

  it('refuses an empty pattern and a wildcard anywhere but after the last dot, naming where it came from', () => {
    for (const pattern of ['', 'issue*', '*.created', 'is*ue.created', '.*']) {
      expect(() => parseEventTypePattern(pattern, '--types')).toThrow(ConfigError)
    }
    expect(() => parseEventTypePattern('a*', '--types')).toThrow(/--types must be an event type/)
  })
})

describe('handler routing', () => {
  const a = () => {}
  const b = () => {}
  const c = () => {}

  it('runs every matching handler in registration order; a prefix matches deeper types too', () => {
    const registry = new HandlerRegistry({ 'issue.*': a, 'issue.created': b, '*': c })
    expect(registry.match('issue.created').each).toEqual([a, b, c])
    expect(registry.match('issue.comment.added').each).toEqual([a, c])
    expect(registry.match('user.created').each).toEqual([c])
    expect(registry.size).toBe(3)
  })

  it('matches nothing for a type no pattern covers, and a prefix does not match its bare stem', () => {
    const registry = new HandlerRegistry({ 'issue.*': a })
    expect(registry.match('issue')).toEqual({ each: [], batch: [] })
    expect(registry.match('issues.created')).toEqual({ each: [], batch: [] })
  })

  it('takes one function for every event, and sees handlers added after a match', () => {
    const registry = new HandlerRegistry(a)
    expect(registry.match('anything').each).toEqual([a])
    registry.add('anything', b)
    expect(registry.match('anything').each).toEqual([a, b])
  })

  it('refuses a handler that is not a function, and handlers that are neither a function nor an object', () => {
    expect(() => new HandlerRegistry({ 'x.y': 'nope' as never })).toThrow(/handler for "x.y" must be a function/)
    expect(() => new HandlerRegistry(null as never)).toThrow(ConfigError)
  })
})
