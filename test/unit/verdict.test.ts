import { describe, expect, it } from 'vitest'
import type { BatchOutcome } from '../../src/poller/dispatch-batch.js'
import { batchVerdicts, lastErrorText, verdictCount, type VerdictPolicy } from '../../src/poller/verdict.js'
import type { OutboxEvent } from '../../src/types.js'

const event = (id: number, attempt = 1, type = 'item.created') => ({ id: String(id), event_id: `e${id}`, event_type: type, attempt }) as OutboxEvent

function outcome(parts: Partial<BatchOutcome>): BatchOutcome {
  return { succeeded: [], failed: [], unmatched: [], deferred: [], latencyMs: [], handlerMs: new Map(), ...parts }
}

const policy: VerdictPolicy = { unmatched: 'process', holdMs: 2000, retryDelayMs: 1000, retryDelayMaxMs: 60_000 }
const noJitter = () => 1

describe('batch verdicts', () => {
  it('gives every event of the batch exactly one verdict', () => {
    const o = outcome({ succeeded: [event(1)], failed: [{ event: event(2), error: new Error('boom') }], unmatched: [event(3)], deferred: [event(4)] })
    expect(verdictCount(batchVerdicts(o, policy, 0))).toBe(4)
    expect(verdictCount(batchVerdicts(o, { ...policy, unmatched: 'hold' }, 0))).toBe(4)
  })

  it('counts an unmatched event as processed under --unmatched process, and holds it for --interval-max under hold', () => {
    const o = outcome({ succeeded: [event(1)], unmatched: [event(2, 1, 'other.thing')] })
    const processing = batchVerdicts(o, policy, 0)
    expect(processing.processed.map((e) => e.id)).toEqual(['1', '2'])
    expect(processing.held).toEqual([])
    const holding = batchVerdicts(o, { ...policy, unmatched: 'hold' }, 0)
    expect(holding.processed.map((e) => e.id)).toEqual(['1'])
    expect(holding.held.map((e) => e.id)).toEqual(['2'])
    expect(holding.holdMs).toBe(2000)
  })

  it('fails an event with its error text and a retry delay that doubles per attempt up to the cap', () => {
    const o = outcome({ failed: [1, 2, 4, 30].map((attempt) => ({ event: event(attempt, attempt), error: new TypeError('bad input') })) })
    const { failed } = batchVerdicts(o, policy, 0, noJitter)
    expect(failed.map((f) => f.delayMs)).toEqual([1000, 2000, 8000, 60_000])
    expect(failed[0]!.error).toBe('TypeError: bad input')
  })

  it('steps deferred events aside for 1 s, doubling per batch in a row that deferred, up to 30 s; none deferred is no delay', () => {
    const o = outcome({ deferred: [event(1)] })
    expect([0, 1, 2, 10].map((deferrals) => batchVerdicts(o, policy, deferrals).deferMs)).toEqual([1000, 2000, 4000, 30_000])
    expect(batchVerdicts(outcome({ succeeded: [event(1)] }), policy, 5).deferMs).toBe(0)
    expect(batchVerdicts(o, policy, 0).failed).toEqual([])
  })

  it('leaves dead-lettering to the settlement: a last attempt is still a failure with a delay', () => {
    const { failed } = batchVerdicts(outcome({ failed: [{ event: event(1, 10), error: new Error('still failing') }] }), policy, 0)
    expect(failed).toHaveLength(1)
    expect(failed[0]!.delayMs).toBeGreaterThan(0)
  })
})

describe('last_error text', () => {
  it('names the error class unless it is a plain Error, and stringifies what is not an Error', () => {
    expect(lastErrorText(new Error('plain'))).toBe('plain')
    expect(lastErrorText(new RangeError('out of range'))).toBe('RangeError: out of range')
    expect(lastErrorText('a string')).toBe('a string')
    expect(lastErrorText(42)).toBe('42')
  })

  it('writes NUL as \\0, which a text column cannot hold, and cuts at 2000 characters', () => {
    expect(lastErrorText(new Error('a\0b'))).toBe('a\\0b')
    const long = lastErrorText(new Error('x'.repeat(5000)))
    expect(long).toHaveLength(2001)
    expect(long.endsWith('…')).toBe(true)
  })
})
