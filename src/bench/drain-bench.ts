import type { Sql } from 'postgres'
import { outboxTable } from '../outbox-table.js'
import { median, percentile } from './percentiles.js'
import { startBenchProcesses } from './bench-processes.js'

export interface DrainResult {
  name: string
  mode: 'poller' | 'bare'
  processes: number
  batchSize: number
  events: number
  eventsPerSecond: number
  /** Highest peak RSS among the processes (MB). */
  peakRssMb: number
  batchP50Ms: number
  batchP99Ms: number
}

/** A payload of the size a captured row typically has (~200 bytes of jsonb). */
export const samplePayloadSql = `jsonb_build_object('data', jsonb_build_object('id', n, 'title', 'Issue number ' || n, 'status', 'open',
  'points', n % 13, 'labels', jsonb_build_array('bench', 'outbox'), 'updated_at', now()))`

/**
 * Fills the outbox with `events` events in one transaction while the processes wait, connected; then times
 * how fast they drain it: events / (last batch start − first batch start), both read from processed_at, so
 * process start-up and connection time never count, for the poller and the baseline alike.
 */
export async function drainBench(sql: Sql, url: string, schema: string, mode: 'poller' | 'bare', processes: number, batchSize: number, events: number): Promise<DrainResult> {
  const outbox = outboxTable(schema, 'outbox').qualified
  await sql.unsafe(`truncate ${outbox}`)
  const workers = await startBenchProcesses(processes, { mode, url, schema, batchSize })
  try {
    await sql.unsafe(`insert into ${outbox} (event_type, entity_type, entity_id, payload) select 'issue.created', 'issue', n::text, ${samplePayloadSql} from generate_series(1, $1::int) n`, [events])
    await sql.unsafe(`analyze ${outbox}`)
    for (const worker of workers) worker.go() // pollers were already woken by the insert's NOTIFY
    for (;;) {
      const [{ pending }] = await sql.unsafe(`select count(*)::int as pending from ${outbox} where processed_at is null`)
      if (pending === 0) break
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const [{ seconds }] = await sql.unsafe(`select extract(epoch from max(processed_at) - min(processed_at))::float8 as seconds from ${outbox}`)
    const reports = await Promise.all(workers.map((worker) => worker.report()))
    const batches = reports.flatMap((report) => report.batchMs)
    return {
      name: `${processes} ${mode === 'bare' ? 'bare loop' : 'poller'}${processes > 1 ? 's' : ''} × batch ${batchSize}`,
      mode,
      processes,
      batchSize,
      events,
      eventsPerSecond: events / Math.max(seconds, 0.001),
      peakRssMb: Math.max(...reports.map((report) => report.peakRssMb)),
      batchP50Ms: median(batches),
      batchP99Ms: percentile(batches, 99),
    }
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()))
  }
}
