import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { bloatMinBytes } from '../../src/ops/maintenance.js'

let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
})
afterAll(async () => {
  await db.drop()
})

describe('bench --soak', () => {
  // The 10-minute soak of the issue, shortened: a minute of steady captured writes, 3 replicas, a cleanup every
  // 6 s. Only what cannot depend on the machine's speed is asserted: exactly once, and sizes that stay bounded.
  it('a minute of steady writes with 3 replicas and cleanups: every event handled exactly once, the outbox and its pending index stay bounded', async () => {
    // on an embedded PostgreSQL of its own: another session's long transaction on a shared server would hold back VACUUM
    const result = await runCli(['bench', '--soak', '60s', '--rate', '1000', '--json'], {}, 240_000)
    expect(result.code, result.stderr).toBe(0)
    const { soak } = JSON.parse(result.stdout)
    expect(soak.written).toBe(60_000)
    expect(soak).toMatchObject({ handled: 60_000, duplicates: 0, missing: 0, replicas: 3, cleanupEverySeconds: 6 })
    expect(soak.samples).toHaveLength(10)
    // a minute is short of the steady state a 10-minute soak reaches by its second minute (1.3 × there): 1.5 × here
    expect(soak.totalSizeRatio).toBeLessThanOrEqual(1.5)
    // the pending index is a few pages here. Bounded means: the last tenth no larger than twice the largest of the
    // first three, or than the size below which cleanup never rebuilds (a ratio of a few 8 kB pages says nothing),
    // both on the tenths' samples and on the peak of the fine samples between them (a sample may fall just after a
    // VACUUM or a rebuild). An index that grew without bound would pass 1 MB by the end: 60,000 entries.
    const bound = (sizes: number[]) => Math.max(2 * Math.max(...sizes.slice(0, 3)), bloatMinBytes)
    const indexBytes = soak.samples.map((sample: { pendingIndexBytes: number }) => sample.pendingIndexBytes)
    expect(indexBytes.at(-1)).toBeLessThanOrEqual(bound(indexBytes))
    const peaks = soak.samples.map((sample: { pendingIndexPeakBytes: number }) => sample.pendingIndexPeakBytes)
    expect(peaks.every((peak: number) => Number.isFinite(peak))).toBe(true)
    expect(peaks.at(-1)).toBeLessThanOrEqual(bound(peaks))
    // the 9 cleanups all ran (their VACUUMs free the index's pages for reuse)
    expect(soak.cleanups).toHaveLength(9)
    expect(soak.met.exactlyOnce).toBe(true)
  }, 300_000)

  it('rejects a soak or a held snapshot of less than 10 s with exit code 2', async () => {
    const short = await runCli(['bench', '--soak', '5s'], { DATABASE_URL: db.url })
    expect(short.code).toBe(2)
    expect(short.stderr.trim()).toBe('outbox-poller: --soak must be between 10s and 1d (got "5s")')
    const bad = await runCli(['bench', '--hold-snapshot', 'soon'], { DATABASE_URL: db.url })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/^outbox-poller: --hold-snapshot must be a duration/)
  }, 60_000)
})
