import { describe, expect, it } from 'vitest'
import { defaults, resolveOptions } from '../../src/poller/poller-options.js'
import { parseDuration } from '../../src/duration.js'
import { ConfigError } from '../../src/errors.js'
import { HandlerRegistry } from '../../src/poller/handler-registry.js'
import { jitteredDelayMs } from '../../src/poller/backoff.js'

describe('options', () => {
  it('applies the documented defaults', () => {
    expect(resolveOptions({})).toMatchObject({ batchSize: 250, intervalMinMs: 250, intervalMaxMs: 2000, maxAttempts: 10, concurrency: 32, handlerTimeoutMs: 30_000, retryDelayMs: 1000, retryDelayMaxMs: 3_600_000, unmatched: 'process', schema: 'public', table: 'outbox' })
    expect(Object.isFrozen(resolveOptions({}))).toBe(true)
    expect(defaults.batchSize).toBe(250)
  })

  it('reads durations in seconds or with a unit', () => {
    expect(parseDuration('0.25', 'x')).toBe(250)
    expect(parseDuration('2', 'x')).toBe(2000)
    expect(parseDuration('250ms', 'x')).toBe(250)
    expect(parseDuration('5m', 'x')).toBe(300_000)
    expect(parseDuration('1h', 'x')).toBe(3_600_000)
    expect(parseDuration('7d', 'x')).toBe(604_800_000)
    expect(() => parseDuration('abc', '--interval-min')).toThrow('--interval-min must be a duration in seconds (0.25) or with a unit (250ms, 30s, 5m, 1h, 7d) (got "abc")')
    expect(() => parseDuration('-1', 'x')).toThrow(ConfigError)
    expect(() => parseDuration('1w', 'x')).toThrow(ConfigError)
  })

  it('names the option, the range and the value in every error', () => {
    expect(() => resolveOptions({ batchSize: 0 })).toThrow('batchSize must be an integer between 1 and 10000 (got 0)')
    expect(() => resolveOptions({ batchSize: '2.5' })).toThrow('batchSize must be an integer between 1 and 10000 (got "2.5")')
    expect(() => resolveOptions({ maxAttempts: '0' }, (key) => `--${key}`)).toThrow('--maxAttempts must be an integer between 1 and 1000 (got "0")')
    expect(() => resolveOptions({ intervalMin: '3', intervalMax: '2' })).toThrow('intervalMin (3000 ms) must not exceed intervalMax (2000 ms)')
    expect(() => resolveOptions({ unmatched: 'drop' })).toThrow('unmatched must be one of process, hold (got "drop")')
    expect(() => resolveOptions({ txMode: 'savepoint' })).toThrow('txMode must be one of event, batch (got "savepoint")')
    expect(() => resolveOptions({ txMode: 'batch', schemas: 'tenant_*' })).toThrow('txMode batch is not available with schemas')
    expect(() => resolveOptions({ handlerTimeout: '2h' })).toThrow('handlerTimeout must be between 1 ms and 3600000 ms (got "2h")')
    expect(() => resolveOptions({ table: '' })).toThrow(ConfigError)
  })
})

describe('batch transaction timeouts', () => {
  it('derives the SET LOCAL timeouts from the drain timeout and the longest a batch can wait for its handlers', () => {
    // drain timeout 30 s + 10 s; ceil(250 / 32) = 8 rounds of 30 s, + 10 s
    expect(resolveOptions({})).toMatchObject({ statementTimeoutMs: 40_000, idleInTransactionTimeoutMs: 250_000 })
    expect(resolveOptions({ drainTimeout: '2m', batchSize: 100, concurrency: 100, handlerTimeout: '5s' })).toMatchObject({ statementTimeoutMs: 120_000, idleInTransactionTimeoutMs: 15_000 })
    // past PostgreSQL's largest timeout (about 24.8 days): off
    expect(resolveOptions({ batchSize: 10_000, concurrency: 1, handlerTimeout: '1h' }).idleInTransactionTimeoutMs).toBe(0)
  })
})

describe('handler routing', () => {
  it('matches exact types, prefix wildcards and *, in registration order', () => {
    const a = () => {}
    const b = () => {}
    const c = () => {}
    const registry = new HandlerRegistry({ 'issue.created': a, 'issue.*': b, '*': c })
    expect(registry.match('issue.created').each).toEqual([a, b, c])
    expect(registry.match('issue.comment.added').each).toEqual([b, c])
    expect(registry.match('issues.created').each).toEqual([c])
    expect(() => new HandlerRegistry({ 'is*ue': a })).toThrow(/pattern/)
    expect(() => new HandlerRegistry({ 'issue.*': 'nope' as never })).toThrow(/must be a function/)
  })
})

describe('retry backoff', () => {
  it('doubles from the first delay up to the cap, with jitter in the upper half', () => {
    expect(jitteredDelayMs(1, 1000, 60_000, () => 1)).toBe(1000)
    expect(jitteredDelayMs(1, 1000, 60_000, () => 0)).toBe(500)
    expect(jitteredDelayMs(4, 1000, 60_000, () => 1)).toBe(8000)
    expect(jitteredDelayMs(30, 1000, 60_000, () => 1)).toBe(60_000)
  })
})
