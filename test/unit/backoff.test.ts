import { describe, expect, it } from 'vitest'
import { reconnectBackoffSeconds } from '../../src/database/connect.js'
import { exponentialDelayMs, jitteredDelayMs } from '../../src/poller/backoff.js'

describe('exponential backoff', () => {
  it('waits the base at step 1 and doubles per step up to the cap', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map((step) => exponentialDelayMs(step, 250, 5000))).toEqual([250, 500, 1000, 2000, 4000, 5000, 5000])
  })

  it('treats a step below 1 as the first, and never overflows on a long outage', () => {
    expect(exponentialDelayMs(0, 100, 1000)).toBe(100)
    expect(exponentialDelayMs(1e6, 100, 30_000)).toBe(30_000)
  })

  it('with jitter, stays in the upper half of the exponential delay', () => {
    expect(jitteredDelayMs(3, 1000, 60_000, () => 0)).toBe(2000)
    expect(jitteredDelayMs(3, 1000, 60_000, () => 1)).toBe(4000)
    for (let i = 0; i < 100; i++) {
      const delay = jitteredDelayMs(2, 1000, 60_000)
      expect(delay).toBeGreaterThanOrEqual(1000)
      expect(delay).toBeLessThanOrEqual(2000)
    }
  })

  it('retries an event after --retry-delay, doubling per failed attempt up to --retry-delay-max', () => {
    expect(jitteredDelayMs(1, 1000, 60_000, () => 1)).toBe(1000)
    expect(jitteredDelayMs(1, 1000, 60_000, () => 0)).toBe(500)
    expect(jitteredDelayMs(4, 1000, 60_000, () => 1)).toBe(8000)
    expect(jitteredDelayMs(30, 1000, 60_000, () => 1)).toBe(60_000)
  })

  it("postgres.js's reconnect delay follows its own curve but never exceeds 1 s, however long the outage", () => {
    expect(reconnectBackoffSeconds(0, () => 1)).toBeCloseTo(0.01)
    expect(reconnectBackoffSeconds(2, () => 1)).toBeCloseTo(0.09)
    expect(reconnectBackoffSeconds(4, () => 0)).toBeCloseTo(0.405)
    for (const failures of [5, 7, 20, 1000]) {
      expect(reconnectBackoffSeconds(failures, () => 1)).toBe(1)
      expect(reconnectBackoffSeconds(failures, () => 0)).toBe(0.5)
    }
  })
})
