import postgres from 'postgres'
import { captureTable } from '../../capture/capture.js'
import { outboxCleanup } from '../../ops/cleanup.js'
import { outboxMaintenance } from '../../ops/maintenance.js'
import { outboxTable, pendingCondition, quoteIdent } from '../../outbox/outbox-table.js'
import { startBenchProcesses } from './bench-processes.js'
import { percentile } from './percentiles.js'

/** One sample of the outbox, every tenth of the run. */
export interface SoakSample {
  atSeconds: number
  /** pg_total_relation_size of the outbox: table, TOAST and every index (bytes). */
  totalBytes: number
  pendingIndexBytes: number
  deadTuples: number
  pending: number
  /** Commit-to-handler latency of the events handled in this tenth (ms). */
  p50Ms: number
  p99Ms: number
  handled: number
}

export interface SoakResult {
  seconds: number
  ratePerSecond: number
  replicas: number
  cleanupEverySeconds: number
  samples: SoakSample[]
  written: number
  handled: number
  /** Events handled more than once (by any replicas). */
  duplicates: number
  /** Written but never handled. */
  missing: number
  /** The last tenth against the second (minute 10 against minute 2 in a 10-minute soak). */
  totalSizeRatio: number
  pendingIndexRatio: number
  p99Ratio: number
}

/** Writer transactions per second; each inserts this many captured rows. */
const rowsPerTransaction = 10

/**
 * A steady load for `seconds`: writers commit `ratePerSecond` captured rows a second (transactions of 10
 * rows), `replicas` poller processes handle them, and a cleanup runs every tenth of the run (a minute of a
 * 10-minute soak), as `cleanup` does: deleting what was processed longer ago than that, then VACUUM and the
 * rebuild of a bloated pending index.
 * Every tenth the outbox's sizes and the latency of the events handled in it are sampled; at the end every
 * written row must have been handled exactly once.
 */
export async function soakBench(url: string, schema: string, seconds: number, ratePerSecond: number, replicas: number, say: (line: string) => void): Promise<SoakResult> {
  const sql = postgres(url, { max: 6, onnotice: () => {}, connection: { synchronous_commit: 'off' } as Record<string, string> })
  const outbox = outboxTable(schema, 'outbox')
  const table = `${quoteIdent(schema)}.soak_items`
  const pendingIndex = `${quoteIdent(schema)}.${quoteIdent('outbox_pending')}`
  await sql.unsafe(`create table ${table} (id bigserial primary key, name text, created_at timestamptz default now())`)
  await captureTable(sql, outbox, { table, entity: 'item' })
  await sql.unsafe(`truncate ${outbox.qualified}`)
  const pollers = await startBenchProcesses(replicas, { mode: 'poller', url, schema, batchSize: 250, recordLatency: true, recordIds: true })
  const tenthMs = (seconds * 1000) / 10
  const cleanupEveryMs = tenthMs
  const snapshots: Array<Omit<SoakSample, 'p50Ms' | 'p99Ms' | 'handled'>> = []
  let written = 0
  const started = Date.now()
  const sample = async () => {
    const [row] = await sql.unsafe(`select pg_total_relation_size($1::regclass) as total, pg_relation_size($2::regclass) as pending_index,
        (select n_dead_tup from pg_stat_user_tables where relid = $1::regclass) as dead, (select count(*) from ${outbox.qualified} where ${pendingCondition}) as pending`, [outbox.qualified, pendingIndex])
    const taken = { atSeconds: Math.round((Date.now() - started) / 1000), totalBytes: Number(row!.total), pendingIndexBytes: Number(row!.pending_index), deadTuples: Number(row!.dead), pending: Number(row!.pending) }
    say(`  ${String(taken.atSeconds).padStart(4)} s  outbox ${mb(taken.totalBytes)}  pending index ${mb(taken.pendingIndexBytes)}  dead tuples ${taken.deadTuples.toLocaleString('en').padStart(9)}  pending ${taken.pending.toLocaleString('en').padStart(7)}`)
    return taken
  }
  try {
    const end = started + seconds * 1000
    const tickMs = 100
    const perTick = Math.max(1, Math.round((ratePerSecond * tickMs) / 1000 / rowsPerTransaction))
    const writes: Promise<unknown>[] = []
    let nextSample = started + tenthMs
    let nextCleanup = started + cleanupEveryMs
    let cleaning: Promise<unknown> = Promise.resolve()
    for (let tick = 0; ; tick++) {
      const due = started + tick * tickMs
      if (due >= end) break
      const wait = due - Date.now()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
      for (let i = 0; i < perTick; i++) {
        writes.push(sql.unsafe(`insert into ${table} (name) select 'x' from generate_series(1, ${rowsPerTransaction})`).execute())
        written += rowsPerTransaction
      }
      if (Date.now() >= nextCleanup) {
        nextCleanup += cleanupEveryMs
        // in the background, as a timer would run it: the writes go on
        cleaning = cleaning.then(async () => {
          await outboxCleanup(sql, outbox, { olderThanMs: cleanupEveryMs, chunkSize: 1000 })
          await outboxMaintenance(sql, outbox)
        })
      }
      if (Date.now() >= nextSample && snapshots.length < 9) {
        nextSample += tenthMs
        snapshots.push(await sample())
      }
    }
    await Promise.all(writes)
    if (snapshots.length < 10) snapshots.push(await sample())
    await cleaning
    for (;;) {
      const [{ pending }] = await sql.unsafe(`select count(*)::int as pending from ${outbox.qualified} where ${pendingCondition}`)
      if (pending === 0) break
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    const reports = await Promise.all(pollers.map((poller) => poller.report()))
    const ids = new Set<number>()
    let handled = 0
    let duplicates = 0
    for (const report of reports) {
      for (const id of report.handledIds) {
        handled++
        if (ids.has(id)) duplicates++
        else ids.add(id)
      }
    }
    // latency per tenth, by the time each event was handled
    const byTenth: number[][] = Array.from({ length: 10 }, () => [])
    for (const report of reports) {
      report.handledAt.forEach((at, i) => byTenth[Math.min(9, Math.max(0, Math.floor((at - started) / tenthMs)))]!.push(report.latencyMs[i]!))
    }
    const samples = snapshots.slice(0, 10).map((s, i) => ({ ...s, p50Ms: percentile(byTenth[i]!, 50), p99Ms: percentile(byTenth[i]!, 99), handled: byTenth[i]!.length }))
    const second = samples[1]
    const last = samples.at(-1)
    return {
      seconds,
      ratePerSecond,
      replicas,
      cleanupEverySeconds: cleanupEveryMs / 1000,
      samples,
      written,
      handled,
      duplicates,
      missing: written - ids.size,
      totalSizeRatio: last && second ? last.totalBytes / second.totalBytes : Number.NaN,
      pendingIndexRatio: last && second ? last.pendingIndexBytes / second.pendingIndexBytes : Number.NaN,
      p99Ratio: last && second ? last.p99Ms / second.p99Ms : Number.NaN,
    }
  } finally {
    await Promise.all(pollers.map((poller) => poller.stop()))
    await sql.end()
  }
}

function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1).padStart(6)} MB`
}
