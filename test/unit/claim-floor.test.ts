import { describe, expect, it } from 'vitest'
import { ClaimFloor } from '../../src/poller/claim-floor.js'

function floorAt(options: { lagMs?: number; sweepMinMs?: number; sweepCostShare?: number } = {}) {
  const clock = { now: 0 }
  return { clock, floor: new ClaimFloor({ now: () => clock.now, lagMs: 1000, sweepMinMs: 1000, sweepCostShare: 200, ...options }) }
}

describe('ClaimFloor', () => {
  it('the first claim sweeps from id 0', () => {
    const { floor } = floorAt()
    expect(floor.next()).toEqual({ fromId: '0', sweep: true })
  })

  it("a claim's lowest fresh id becomes the floor only after the lag, so late commits in between are found", () => {
    const { clock, floor } = floorAt({ sweepMinMs: 1e9 })
    floor.claimed('100', true, 1)
    clock.now = 500
    expect(floor.next()).toEqual({ fromId: '0', sweep: false })
    floor.claimed('300', false, 1)
    clock.now = 999
    floor.claimed('400', false, 1)
    expect(floor.next().fromId).toBe('0')
    clock.now = 1000
    floor.claimed('500', false, 1)
    expect(floor.next()).toEqual({ fromId: '100', sweep: false })
    floor.claimed('510', false, 1)
    clock.now = 2000
    floor.claimed('900', false, 1)
    // the candidate taken at 1000 (500), not the newest claim's
    expect(floor.next().fromId).toBe('500')
  })

  it('a claim that took no fresh event leaves the floor where it was', () => {
    const { clock, floor } = floorAt()
    floor.claimed('100', true, 1)
    clock.now = 1500
    floor.claimed('200', false, 1)
    clock.now = 3000
    floor.claimed(undefined, true, 1)
    expect(floor.next().fromId).toBe('100')
  })

  it('sweeps come every sweepMinMs, and a slow sweep spaces the next ones by its cost share', () => {
    const { clock, floor } = floorAt()
    floor.claimed(undefined, true, 2) // 2 ms × 200 = 400 ms < 1 s
    clock.now = 999
    expect(floor.next().sweep).toBe(false)
    clock.now = 1000
    expect(floor.next().sweep).toBe(true)
    floor.claimed(undefined, true, 50) // 50 ms × 200 = 10 s
    clock.now = 10_999
    expect(floor.next().sweep).toBe(false)
    clock.now = 11_000
    expect(floor.next().sweep).toBe(true)
  })

  it('a sweep that finds a straggler lower than the floor lowers it', () => {
    const { clock, floor } = floorAt({ sweepMinMs: 1000 })
    floor.claimed('1000', true, 1)
    clock.now = 1000
    floor.claimed('2000', true, 1)
    clock.now = 2000
    floor.claimed('40', true, 1) // a late commit (or a rolled-back batch) far below
    clock.now = 3000
    floor.claimed('3000', true, 10) // next sweep at 5000
    clock.now = 3500
    expect(floor.next()).toEqual({ fromId: '40', sweep: false })
  })

  it('reset forgets the floor and sweeps next', () => {
    const { clock, floor } = floorAt()
    floor.claimed('100', true, 1)
    clock.now = 1000
    floor.claimed('200', true, 1)
    clock.now = 1500
    expect(floor.next()).toEqual({ fromId: '100', sweep: false })
    floor.reset()
    expect(floor.next()).toEqual({ fromId: '0', sweep: true })
  })

  it('ids beyond 2^53 stay exact', () => {
    const { clock, floor } = floorAt({ sweepMinMs: 1e9 })
    floor.claimed('9007199254740993', true, 1)
    clock.now = 1000
    floor.claimed('9007199254740995', false, 1)
    clock.now = 1500
    expect(floor.next().fromId).toBe('9007199254740993')
  })
})
