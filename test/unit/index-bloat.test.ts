import { describe, expect, it } from 'vitest'
import { bloatFactor, bloatMinBytes, churnEntries, churnRateMinSeconds, freshIndexBytes, indexBloated, steadyIndexBytes } from '../../src/ops/index-bloat.js'

describe('index bloat', () => {
  it('a fresh build of no entries is a metapage and a root; of 8-byte keys, about 367 entries per 90 % full leaf', () => {
    expect(freshIndexBytes(0, 8)).toBe(2 * 8192)
    expect(freshIndexBytes(367, 8)).toBe(3 * 8192)
    expect(freshIndexBytes(368, 8)).toBe(4 * 8192)
    // a minute at 2,000 inserts/s: ~2.6 MB, what the soak's pending index settles at between cleanups
    expect(freshIndexBytes(120_000, 8)).toBe(2 * 8192 + 327 * 8192)
    // keys are 8-aligned
    expect(freshIndexBytes(1000, 9)).toBe(freshIndexBytes(1000, 16))
  })

  it('the churn between two VACUUMs is the inserts since the last one', () => {
    expect(churnEntries({ inserted: 120_000, secondsSinceVacuum: 60, autovacuum: false, naptimeSeconds: 60 })).toBe(120_000)
    // longer than a naptime (autovacuum did not come): all of them, still
    expect(churnEntries({ inserted: 600_000, secondsSinceVacuum: 300, autovacuum: true, naptimeSeconds: 60 })).toBe(600_000)
    expect(churnEntries({ inserted: 5000, secondsSinceVacuum: undefined, autovacuum: false, naptimeSeconds: 60 })).toBe(5000)
  })

  it('after an autovacuum shortly before, the churn is a naptime at the rate since; seconds after one, it is unknown', () => {
    expect(churnEntries({ inserted: 40_000, secondsSinceVacuum: 20, autovacuum: true, naptimeSeconds: 60 })).toBe(120_000)
    // a few seconds' inserts are no rate: nothing is rebuilt this time
    expect(churnEntries({ inserted: 10_000, secondsSinceVacuum: churnRateMinSeconds - 1, autovacuum: true, naptimeSeconds: 60 })).toBe(Number.POSITIVE_INFINITY)
    expect(indexBloated(7.5 * 1024 * 1024, freshIndexBytes(Number.POSITIVE_INFINITY, 8))).toBe(false)
    // idle since: no churn to allow for
    expect(churnEntries({ inserted: 0, secondsSinceVacuum: 1, autovacuum: true, naptimeSeconds: 60 })).toBe(0)
  })

  it('seconds after a VACUUM run by hand (as once a held snapshot ended), the inserts since: a burst before it is the bloat, not a rate', () => {
    expect(churnEntries({ inserted: 10_000, secondsSinceVacuum: churnRateMinSeconds - 1, autovacuum: false, naptimeSeconds: 60 })).toBe(10_000)
  })

  it('bloated: over the minimum size and over the factor × the steady size, both', () => {
    const steady = freshIndexBytes(120_000, 8)
    expect(indexBloated(Math.floor(bloatFactor * steady), steady)).toBe(false)
    expect(indexBloated(Math.floor(bloatFactor * steady) + 8192, steady)).toBe(true)
    expect(indexBloated(bloatMinBytes, 8192)).toBe(false)
    expect(indexBloated(bloatMinBytes + 8192, 8192)).toBe(true)
    // PostgreSQL 15's pending index in the soak at 2,000 rows/s, a cleanup a minute: a steady 2.4–5 MB (two minutes'
    // inserts, as maintenance.ts weighs an id-ordered index) is not rebuilt; the same left at 12 MB is
    const steadyEntries = 100 + 2 * 120_000
    expect(indexBloated(5 * 1024 * 1024, freshIndexBytes(steadyEntries, 8))).toBe(false)
    expect(indexBloated(12 * 1024 * 1024, freshIndexBytes(steadyEntries, 8))).toBe(true)
  })
  it('the steady size: the churn bound, or, with the pages used before the VACUUM known, those or the live entries, whichever is larger, when smaller', () => {
    const churn = freshIndexBytes(2 * 120_000, 8)
    const live = freshIndexBytes(100, 8)
    expect(steadyIndexBytes(churn, live, undefined)).toBe(churn)
    // the claims' scans marked the dead entries: a few pages an interval
    expect(steadyIndexBytes(churn, live, 5 * 8192)).toBe(5 * 8192)
    expect(steadyIndexBytes(churn, live, 8192)).toBe(live)
    // a horizon held through the interval: every insert was in use, the churn bound stands
    expect(steadyIndexBytes(churn, live, 3 * churn)).toBe(churn)
    // a 2 MB file left from a spell, an interval of 5 pages: rebuilt; by the churn alone it is not
    expect(indexBloated(2 * 1024 * 1024, steadyIndexBytes(churn, live, 5 * 8192))).toBe(true)
    expect(indexBloated(2 * 1024 * 1024, steadyIndexBytes(churn, live, undefined))).toBe(false)
  })
})
