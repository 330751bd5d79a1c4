import { percentile } from './percentiles.js'

/** The targets of the soak (issue: minute 10 against minute 2). */
export const soakTargets = { totalSize: 1.3, pendingIndex: 2, p99: 2 } as const

/** What the verdict weighs of one tenth: the sizes of its end-of-tenth sample, the median and peak of its fine samples, its p99. */
export interface TenthMeasures {
  totalBytes: number
  totalMedianBytes: number
  totalPeakBytes: number
  pendingIndexBytes: number
  pendingIndexMedianBytes: number
  pendingIndexPeakBytes: number
  p99Ms: number
}

export interface SoakVerdict {
  totalSizeRatio: number
  totalSizeMedianRatio: number
  totalSizePeakRatio: number
  pendingIndexRatio: number
  pendingIndexMedianRatio: number
  pendingIndexPeakRatio: number
  p99Ratio: number
  /**
   * Each target met: a size on the tenths' sample and on the peak of their fine samples alike (neither may flatter it;
   * the median is printed, not weighed: the second tenth's is mid-ramp while the first deletes begin).
   */
  met: { totalSize: boolean; pendingIndex: boolean; p99: boolean; exactlyOnce: boolean }
}

/** The median and the largest of a tenth's fine samples; NaN for a tenth without one, which then meets no target. */
export function medianAndPeak(values: number[]): { median: number; peak: number } {
  return { median: percentile(values, 50), peak: values.length === 0 ? Number.NaN : Math.max(...values) }
}

/** The last tenth against the second, and which targets that meets. */
export function soakVerdict(second: TenthMeasures, last: TenthMeasures, counts: { written: number; handled: number; duplicates: number; missing: number }): SoakVerdict {
  const ratio = (of: (tenth: TenthMeasures) => number) => of(last) / of(second)
  const ratios = {
    totalSizeRatio: ratio((t) => t.totalBytes),
    totalSizeMedianRatio: ratio((t) => t.totalMedianBytes),
    totalSizePeakRatio: ratio((t) => t.totalPeakBytes),
    pendingIndexRatio: ratio((t) => t.pendingIndexBytes),
    pendingIndexMedianRatio: ratio((t) => t.pendingIndexMedianBytes),
    pendingIndexPeakRatio: ratio((t) => t.pendingIndexPeakBytes),
    p99Ratio: ratio((t) => t.p99Ms),
  }
  // every comparison with NaN is false: a ratio that could not be taken meets nothing
  const within = (limit: number, ...values: number[]) => values.every((value) => value <= limit)
  return {
    ...ratios,
    met: {
      totalSize: within(soakTargets.totalSize, ratios.totalSizeRatio, ratios.totalSizePeakRatio),
      pendingIndex: within(soakTargets.pendingIndex, ratios.pendingIndexRatio, ratios.pendingIndexPeakRatio),
      p99: within(soakTargets.p99, ratios.p99Ratio),
      exactlyOnce: counts.handled === counts.written && counts.duplicates === 0 && counts.missing === 0,
    },
  }
}
