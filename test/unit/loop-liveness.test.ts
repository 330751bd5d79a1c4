import { describe, expect, it } from 'vitest'
import { defaults } from '../../src/poller/poller-options.js'
import { loopAllowances, LoopLiveness } from '../../src/supervisor/loop-liveness.js'

const allowances = loopAllowances({ connectTimeoutMs: defaults.connectTimeoutMs, intervalMaxMs: defaults.intervalMaxMs, drainTimeoutMs: defaults.handlerTimeoutMs + defaults.drainMarginMs })

describe('loop liveness (what the systemd watchdog pings on)', () => {
  it('allows a healthy loop its longest waits: start-up with the connect timeout, a batch with the drain timeout, an outage with the backoff', () => {
    expect(allowances).toEqual({ startingMs: 40_000, pollingMs: 45_000, failingMs: 97_000 })
  })

  it('a starting worker is alive until the start-up allowance runs out', () => {
    const loop = new LoopLiveness(0)
    expect(loop.alive(allowances, allowances.startingMs)).toBe(true)
    expect(loop.alive(allowances, allowances.startingMs + 1)).toBe(false)
  })

  it('a loop that claimed is alive for the polling allowance; after a failed claim, for the longer outage allowance', () => {
    const loop = new LoopLiveness(0)
    loop.iterated(false, 1_000)
    expect(loop.lastLoopAt).toBe(1_000)
    expect(loop.alive(allowances, 1_000 + allowances.pollingMs)).toBe(true)
    expect(loop.alive(allowances, 1_000 + allowances.pollingMs + 1)).toBe(false)
    loop.iterated(true, 2_000)
    expect(loop.alive(allowances, 2_000 + allowances.pollingMs + 1)).toBe(true)
    expect(loop.alive(allowances, 2_000 + allowances.failingMs + 1)).toBe(false)
    // the claim after the outage works again: back to the shorter allowance
    loop.iterated(false, 3_000)
    expect(loop.alive(allowances, 3_000 + allowances.pollingMs + 1)).toBe(false)
  })
})
