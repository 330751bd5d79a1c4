import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
})
afterAll(async () => {
  await db.drop()
})

describe('demo and bench', () => {
  it('demo runs replicas against a captured table and proves every guarantee it shows', async () => {
    const result = await runCli(['demo', '--duration', '3s', '--burst', '3000', '--rate', '100'], { DATABASE_URL: db.url }, 120_000)
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/✓ every change captured: ([\d,]+) changes written, \1 events in the outbox/)
    expect(result.stdout).toMatch(/✓ every event processed: 0 pending/)
    expect(result.stdout).toMatch(/✓ each event handled exactly once: [\d,]+ distinct events handled, 0 handled twice/)
    // it cleans up after itself: no schema left behind
    const schemas = await db.sql`select nspname from pg_namespace where nspname like 'outbox_demo_%'`
    expect(schemas).toHaveLength(0)
  })

  it('bench reports sane figures for the drain and latency parts (a smoke test: no speed is asserted)', async () => {
    const result = await runCli(['bench', '--events', '2000', '--seconds', '1', '--json', '--only', 'drain,latency'], { DATABASE_URL: db.url }, 240_000)
    expect(result.code).toBe(0)
    const report = JSON.parse(result.stdout)
    const floors = (n: number, batch: number) => {
      const s = n > 1 ? 's' : ''
      return [`${n} bare loop${s} (minimal table) × batch ${batch}`, `${n} bare loop${s} (our table) × batch ${batch}`, `${n} poller${s} × batch ${batch}`]
    }
    expect(report.drain.map((r: { name: string }) => r.name)).toEqual([
      ...floors(1, 250), ...floors(3, 250), ...floors(1, 1000), ...floors(1, 50), ...floors(5, 250),
      '1 poller × batch 250, 40 entities, unordered', '1 poller × batch 250, 40 entities, --ordering entity', '1 poller × batch 250, 8 groups of 5 entities, --ordering group', '1 poller × batch 250, a ctx.tx write per event', '1 poller × batch 250, a ctx.tx write per event, --tx-mode batch',
      '1 writer × batch 250, the ctx.tx writes alone (32 in flight, no outbox)',
    ])
    // every poller configuration carries its ratios to the floor measured beside it
    const compared = report.drain.filter((r: { mode: string; ratios?: { floor?: number } }) => r.mode === 'poller' && r.ratios?.floor !== undefined)
    expect(compared).toHaveLength(5)
    for (const run of compared) {
      expect(run.ratios.floor).toBeGreaterThan(0)
      expect(run.ratios.sameTable).toBeGreaterThan(0)
      expect(run.ratios.rssFloor).toBeGreaterThan(0)
    }
    // ctx.tx against the no-op handler, and --tx-mode batch against the turns it takes with its writes measured alone
    const [withTx, withBatchTx, writesAlone] = report.drain.slice(-3)
    expect(withTx.ratios.noop).toBeGreaterThan(0)
    expect(withTx.ratios.turns).toBeUndefined()
    expect(withBatchTx.ratios.noop).toBeGreaterThan(0)
    expect(withBatchTx.ratios.turns).toBeGreaterThan(0)
    expect(writesAlone).toMatchObject({ mode: 'writes', events: 2000 })
    for (const run of report.drain) {
      expect(run.eventsPerSecond).toBeGreaterThan(0)
      expect(run.peakRssMb).toBeGreaterThan(10)
      expect(run.batchP99Ms).toBeGreaterThanOrEqual(run.batchP50Ms)
    }
    expect(report.latency).toHaveLength(2)
    for (const run of report.latency) {
      expect(run.events).toBe(Math.round(run.ratePerSecond))
      expect(run.p99Ms).toBeGreaterThanOrEqual(run.p50Ms)
      expect(run.p50Ms).toBeGreaterThanOrEqual(0)
    }
    const schemas = await db.sql`select nspname from pg_namespace where nspname like 'outbox_bench_%'`
    expect(schemas).toHaveLength(0)
  }, 240_000)

  it('bench reports the capture part against the floor trigger, measured in the same run (a smoke test: no speed is asserted)', async () => {
    const result = await runCli(['bench', '--events', '2000', '--seconds', '1', '--json', '--only', 'capture'], { DATABASE_URL: db.url }, 240_000)
    expect(result.code).toBe(0)
    expect(result.stderr).toMatch(/writers: (pgbench|the bench's own postgres\.js processes \(no pgbench on this machine\)), 4 at once/)
    const report = JSON.parse(result.stdout)
    expect(report.capture.map((r: { name: string }) => r.name)).toEqual([
      ...['single-row insert', 'single-row update', '1,000-row insert', '1,000-row update', '1,000-row delete'].flatMap((write) => [`${write}, by row`, `${write}, by statement`]),
      'single-row insert, 20,000 pending events, by statement',
    ])
    for (const run of report.capture) expect(run.vsFloor).toBeGreaterThan(0)
    const schemas = await db.sql`select nspname from pg_namespace where nspname like 'outbox_bench_%'`
    expect(schemas).toHaveLength(0)
  }, 240_000)

  it('bench rejects bad input with exit code 2', async () => {
    const bad = await runCli(['bench', '--only', 'speed'], { DATABASE_URL: db.url })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/--only must list parts among drain, latency, capture, relay \(got "speed"\)/)
    expect((await runCli(['bench', '--events', '10'], { DATABASE_URL: db.url })).stderr).toMatch(/--events must be an integer between 1000 and 10000000/)
    expect((await runCli(['demo', '--duration', 'soon'], { DATABASE_URL: db.url })).code).toBe(2)
  })

  it('bench --sink to a broker that refuses says why in one line per process, without a stack trace or the password', async () => {
    const refused = await runCli(['bench', '--only', 'relay', '--events', '1000', '--sink', 'amqp://guest:not-the-password@127.0.0.1:5672/?exchange=outbox_bench_missing'], { DATABASE_URL: db.url })
    expect(refused.code).not.toBe(0)
    expect(refused.stderr).toMatch(/^outbox-poller: broker ceiling: .*ACCESS.REFUSED/m)
    expect(refused.stderr).not.toMatch(/\n\s+at /)
    expect(refused.stderr).not.toContain('not-the-password')
    const missing = await runCli(['bench', '--only', 'relay', '--events', '1000', '--sink', 'amqp://guest:guest@127.0.0.1:5672/?exchange=outbox_bench_missing'], { DATABASE_URL: db.url })
    expect(missing.code).not.toBe(0)
    expect(missing.stderr).toMatch(/^outbox-poller: bench poller: sink "amqp:\/\/guest:\*\*\*@127\.0\.0\.1:5672\/\?exchange=outbox_bench_missing": exchange "outbox_bench_missing" does not exist/m)
    expect(missing.stderr).not.toMatch(/\n\s+at /)
  })
})
