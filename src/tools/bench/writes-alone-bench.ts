import type { Sql } from 'postgres'
import { startBenchProcesses } from './bench-processes.js'
import { type DrainResult, emptyBenchEffects } from './drain-bench.js'
import { median, percentile } from './percentiles.js'

/**
 * The floor of `--tx-mode batch`: the bench handler's writes, one insert per event, with no claim, no settlement
 * and no poller, in one process of their own. A batch's claim and settlement and its handlers' writes take
 * turns on its one connection, so the poller can reach at most 1 ÷ (1 ÷ no-op drain + 1 ÷ this).
 */
export async function writesAloneBench(sql: Sql, url: string, schema: string, batchSize: number, events: number, inFlight: number): Promise<DrainResult> {
  await emptyBenchEffects(sql, schema)
  const [writer] = await startBenchProcesses(1, { mode: 'writes', url, schema, batchSize, events, inFlight })
  try {
    writer!.go()
    const report = await writer!.report()
    const seconds = report.batchMs.reduce((sum, ms) => sum + ms, 0) / 1000
    return {
      name: `1 writer × batch ${batchSize}, the ctx.tx writes alone (${inFlight} in flight, no outbox)`,
      mode: 'writes',
      processes: 1,
      batchSize,
      events: report.handled,
      eventsPerSecond: report.handled / Math.max(seconds, 0.001),
      peakRssMb: report.peakRssMb,
      batchP50Ms: median(report.batchMs),
      batchP99Ms: percentile(report.batchMs, 99),
    }
  } finally {
    await writer!.stop()
    await emptyBenchEffects(sql, schema)
  }
}
