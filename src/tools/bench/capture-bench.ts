import postgres from 'postgres'
import { captureTable } from '../../capture/capture.js'
import { outboxTable, quoteIdent } from '../../outbox/outbox-table.js'
import { type BenchProcess, startBenchProcesses } from './bench-processes.js'

export interface CaptureResult {
  name: string
  /** Statements per second into the plain table. */
  plainPerSecond: number
  capturedPerSecond: number
  ratio: number
}

type Op = 'insert' | 'update' | 'bulk'
/** How the wake-up flag stands while the writers write. */
export type WakeState = 'no poller' | 'poller asleep' | 'live poller'

/**
 * Writer throughput, `writers` concurrent processes for `seconds` each, into a plain table and into the
 * same table captured, for single-row inserts, single-row updates and 1,000-row insert statements.
 * `no poller`: the wake-up flag stays down (trigger cost alone); `poller asleep`: the flag stays up, so every
 * writing transaction notifies (the worst case of the wake-up); `live poller`: one poller drains as they write.
 */
export async function captureBench(url: string, schema: string, writers: number, seconds: number, wake: WakeState): Promise<CaptureResult[]> {
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  const outbox = outboxTable(schema, 'outbox')
  const rows = 10_000
  const tables = { plain: 'capture_plain', captured: 'capture_captured' }
  for (const name of Object.values(tables)) {
    const table = `${quoteIdent(schema)}.${quoteIdent(name)}`
    await sql.unsafe(`drop table if exists ${table}`)
    await sql.unsafe(`create table ${table} (id bigserial primary key, name text not null, amount int not null, updated_at timestamptz not null default now())`)
    await sql.unsafe(`insert into ${table} (name, amount) select 'item', n from generate_series(1, ${rows}) n`)
  }
  await captureTable(sql, outbox, { table: `${quoteIdent(schema)}.${tables.captured}`, entity: 'item' })
  let poller: BenchProcess | undefined
  if (wake === 'live poller') [poller] = await startBenchProcesses(1, { mode: 'poller', url, schema, batchSize: 250 })
  const results: CaptureResult[] = []
  try {
    for (const op of ['insert', 'update', 'bulk'] as Op[]) {
      const rate = async (table: string) => {
        await sql.unsafe(`vacuum analyze ${quoteIdent(schema)}.${quoteIdent(table)}`)
        if (wake === 'poller asleep') await sql.unsafe(`update ${outbox.wakeup} set asleep = true`)
        if (wake === 'no poller') await sql.unsafe(`update ${outbox.wakeup} set asleep = false`)
        const processes = await startBenchProcesses(writers, { mode: 'writer', url, schema, table, op, seconds, rows })
        for (const process of processes) process.go()
        const reports = await Promise.all(processes.map((process) => process.report()))
        await Promise.all(processes.map((process) => process.stop()))
        return reports.reduce((sum, report) => sum + report.statements, 0) / seconds
      }
      const plainPerSecond = await rate(tables.plain)
      const capturedPerSecond = await rate(tables.captured)
      const label = op === 'insert' ? 'single-row insert' : op === 'update' ? 'single-row update' : '1,000-row insert'
      results.push({ name: `${label}, ${writers} writers, ${wake}`, plainPerSecond, capturedPerSecond, ratio: capturedPerSecond / plainPerSecond })
    }
  } finally {
    await poller?.stop()
    await sql.unsafe(`update ${outbox.wakeup} set asleep = false`)
    await sql.end()
  }
  return results
}
