import { describe, expect, it } from 'vitest'
import { medianAndPeak, soakVerdict, type TenthMeasures } from '../../src/tools/bench/soak-verdict.js'

const mb = 1024 * 1024
const tenth = (pendingIndex: { sample: number; median: number; peak: number }, p99Ms = 40): TenthMeasures => ({
  totalBytes: 90 * mb,
  totalMedianBytes: 90 * mb,
  totalPeakBytes: 92 * mb,
  pendingIndexBytes: pendingIndex.sample,
  pendingIndexMedianBytes: pendingIndex.median,
  pendingIndexPeakBytes: pendingIndex.peak,
  p99Ms,
})
const once = { written: 1000, handled: 1000, duplicates: 0, missing: 0 }

describe('soak verdict', () => {
  it('a steady pending index meets its target; the ratios are of the last tenth to the second', () => {
    const verdict = soakVerdict(tenth({ sample: 2.4 * mb, median: 2.4 * mb, peak: 2.5 * mb }), tenth({ sample: 2.6 * mb, median: 2.5 * mb, peak: 2.7 * mb }, 30), once)
    expect(verdict.pendingIndexRatio).toBeCloseTo(2.6 / 2.4)
    expect(verdict.pendingIndexPeakRatio).toBeCloseTo(2.7 / 2.5)
    expect(verdict.p99Ratio).toBeCloseTo(0.75)
    expect(verdict.met).toEqual({ totalSize: true, pendingIndex: true, p99: true, exactlyOnce: true })
  })

  it('a sample that fell just after a rebuild fails the target though the median and peak are steady', () => {
    const verdict = soakVerdict(tenth({ sample: 0.1 * mb, median: 1.2 * mb, peak: 2.4 * mb }), tenth({ sample: 2.4 * mb, median: 1.2 * mb, peak: 2.4 * mb }), once)
    expect(verdict.pendingIndexRatio).toBeCloseTo(24)
    expect(verdict.met.pendingIndex).toBe(false)
  })

  it('a flattering sample does not pass an index whose peak grew', () => {
    const verdict = soakVerdict(tenth({ sample: 2 * mb, median: 2 * mb, peak: 2 * mb }), tenth({ sample: 2 * mb, median: 3 * mb, peak: 9 * mb }), once)
    expect(verdict.pendingIndexRatio).toBe(1)
    expect(verdict.met.pendingIndex).toBe(false)
  })

  it('the median is not weighed: a second tenth mid-ramp (the first deletes begin in it) does not fail a steady end', () => {
    const verdict = soakVerdict(tenth({ sample: 2 * mb, median: 0.5 * mb, peak: 2 * mb }), tenth({ sample: 2 * mb, median: 2 * mb, peak: 2 * mb }), once)
    expect(verdict.pendingIndexMedianRatio).toBe(4)
    expect(verdict.met.pendingIndex).toBe(true)
  })

  it('a tenth without fine samples meets nothing; a lost or repeated event fails exactly once', () => {
    expect(medianAndPeak([])).toEqual({ median: Number.NaN, peak: Number.NaN })
    expect(medianAndPeak([3, 1, 2])).toEqual({ median: 2, peak: 3 })
    const empty = tenth({ sample: 2 * mb, median: Number.NaN, peak: Number.NaN })
    const verdict = soakVerdict(empty, tenth({ sample: 2 * mb, median: 2 * mb, peak: 2 * mb }), { written: 1000, handled: 1001, duplicates: 1, missing: 0 })
    expect(verdict.met.pendingIndex).toBe(false)
    expect(verdict.met.exactlyOnce).toBe(false)
  })
})
