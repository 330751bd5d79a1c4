import postgres from 'postgres'
import { captureTable } from '../../capture/capture.js'
import { holdsSnapshot } from '../../database/vacuum-horizon.js'
import { outboxCleanup } from '../../ops/cleanup.js'
import { outboxMaintenance } from '../../ops/maintenance.js'
import { outboxTable, pendingCondition, quoteIdent } from '../../outbox/outbox-table.js'
import { startBenchProcesses } from './bench-processes.js'
import { percentile } from './percentiles.js'
import { medianAndPeak, soakVerdict, type SoakVerdict } from './soak-verdict.js'

/** One sample of the outbox, at the end of every tenth of the run, with what the fine samples of the tenth saw. */
export interface SoakSample {
  atSeconds: number
  /** pg_total_relation_size of the outbox: table, TOAST and every index (bytes). */
  totalBytes: number
  pendingIndexBytes: number
  deadTuples: number
  pending: number
  /** The fine samples taken in this tenth (`curve`): the median and the largest of their sizes (bytes). */
  totalMedianBytes: number
  totalPeakBytes: number
  pendingIndexMedianBytes: number
  pendingIndexPeakBytes: number
  /** Commit-to-handler latency of the events handled in this tenth (ms). */
  p50Ms: number
  p99Ms: number
  handled: number
}

/** A fine sample, every few seconds: the sawtooth between VACUUMs that the tenths' samples fall on at random. */
export interface SoakCurvePoint {
  atMs: number
  totalBytes: number
  pendingIndexBytes: number
  deadTuples: number
  /** pg_stat_user_tables' counts so far: autovacuum's runs on the outbox, and the VACUUMs run by hand (cleanup's). */
  autovacuums: number
  vacuums: number
  /** Age (s) of the oldest snapshot or transaction id held in this database, and in any other (0: none): what holds VACUUM back. */
  oldestSnapshotSeconds: number
  oldestSnapshotElsewhereSeconds: number
}

/** One cleanup of the run: when it started, how long its deletes and its VACUUM and rebuild took, what it rebuilt. */
export interface SoakCleanup {
  atMs: number
  deleted: number
  deleteMs: number
  maintenanceMs: number
  rebuilt: Array<{ index: string; bytesBefore: number; bytesAfter: number }>
}

export interface SoakResult extends SoakVerdict {
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
  /** The fine samples, one every `curveEverySeconds`. */
  curveEverySeconds: number
  curve: SoakCurvePoint[]
  cleanups: SoakCleanup[]
  /** pgstattuple was installed: cleanup weighed the pending index by the pages it used (index-usage.ts). */
  pgstattuple: boolean
}

/** Writer transactions per second; each inserts this many captured rows. */
const rowsPerTransaction = 10

/**
 * A steady load for `seconds`: writers commit `ratePerSecond` captured rows a second (transactions of 10
 * rows), `replicas` poller processes handle them, and a cleanup runs every tenth of the run (a minute of a
 * 10-minute soak), as `cleanup` does: deleting what was processed longer ago than that, then VACUUM and the
 * rebuild of a bloated pending index.
 * Every tenth the outbox's sizes and the latency of the events handled in it are sampled, and every few seconds
 * (on a connection of its own) its sizes, dead tuples and vacuum counts; at the end every written row must have
 * been handled exactly once.
 */
export async function soakBench(url: string, schema: string, seconds: number, ratePerSecond: number, replicas: number, say: (line: string) => void): Promise<SoakResult> {
  const sql = postgres(url, { max: 6, onnotice: () => {}, connection: { synchronous_commit: 'off' } as Record<string, string> })
  const outbox = outboxTable(schema, 'outbox')
  const table = `${quoteIdent(schema)}.soak_items`
  const pendingIndex = `${quoteIdent(schema)}.${quoteIdent('outbox_pending')}`
  await sql.unsafe(`create table ${table} (id bigserial primary key, name text, created_at timestamptz default now())`)
  await captureTable(sql, outbox, { table, entity: 'item' })
  await sql.unsafe(`truncate ${outbox.qualified}`)
  const [{ pgstattuple }] = await sql<Array<{ pgstattuple: boolean }>>`select exists (select 1 from pg_extension where extname = 'pgstattuple') as pgstattuple`
  const pollers = await startBenchProcesses(replicas, { mode: 'poller', url, schema, batchSize: 250, recordLatency: true, recordIds: true })
  const tenthMs = (seconds * 1000) / 10
  const cleanupEveryMs = tenthMs
  const snapshots: Array<Pick<SoakSample, 'atSeconds' | 'totalBytes' | 'pendingIndexBytes' | 'deadTuples' | 'pending'>> = []
  const curve: SoakCurvePoint[] = []
  const cleanups: SoakCleanup[] = []
  // 30 a tenth of a 10-minute soak, 10 a tenth of a minute's
  const curveEveryMs = Math.max(500, Math.min(2000, tenthMs / 10))
  const curveSql = postgres(url, { max: 1, onnotice: () => {} })
  let curveDone = false
  let written = 0
  const started = Date.now()
  const sample = async () => {
    const [row] = await sql.unsafe(`select pg_total_relation_size($1::regclass) as total, pg_relation_size($2::regclass) as pending_index,
        (select n_dead_tup from pg_stat_user_tables where relid = $1::regclass) as dead, (select count(*) from ${outbox.qualified} where ${pendingCondition}) as pending`, [outbox.qualified, pendingIndex])
    const taken = { atSeconds: Math.round((Date.now() - started) / 1000), totalBytes: Number(row!.total), pendingIndexBytes: Number(row!.pending_index), deadTuples: Number(row!.dead), pending: Number(row!.pending) }
    say(`  ${String(taken.atSeconds).padStart(4)} s  outbox ${mb(taken.totalBytes)}  pending index ${mb(taken.pendingIndexBytes)}  dead tuples ${taken.deadTuples.toLocaleString('en').padStart(9)}  pending ${taken.pending.toLocaleString('en').padStart(7)}`)
    return taken
  }
  const curveLoop = (async () => {
    for (let next = Date.now(); !curveDone; next += curveEveryMs) {
      const [row] = await curveSql.unsafe(`select pg_total_relation_size($1::regclass) as total, pg_relation_size($2::regclass) as pending_index,
          n_dead_tup as dead, autovacuum_count as autovacuums, vacuum_count as vacuums,
          (select coalesce(max(extract(epoch from now() - xact_start)), 0) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and ${holdsSnapshot})::float8 as here,
          (select coalesce(max(extract(epoch from now() - xact_start)), 0) from pg_stat_activity where datname <> current_database() and ${holdsSnapshot})::float8 as elsewhere
          from pg_stat_user_tables where relid = $1::regclass`, [outbox.qualified, pendingIndex])
      curve.push({
        atMs: Date.now() - started,
        totalBytes: Number(row!.total),
        pendingIndexBytes: Number(row!.pending_index),
        deadTuples: Number(row!.dead),
        autovacuums: Number(row!.autovacuums),
        vacuums: Number(row!.vacuums),
        oldestSnapshotSeconds: Number(row!.here),
        oldestSnapshotElsewhereSeconds: Number(row!.elsewhere),
      })
      const wait = next + curveEveryMs - Date.now()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    }
  })()
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
          const at = Date.now()
          const { processed } = await outboxCleanup(sql, outbox, { olderThanMs: cleanupEveryMs, chunkSize: 1000 })
          const deleted = Date.now()
          const maintained = await outboxMaintenance(sql, outbox)
          cleanups.push({ atMs: at - started, deleted: processed, deleteMs: deleted - at, maintenanceMs: Date.now() - deleted, rebuilt: maintained === 'notOwner' ? [] : maintained.rebuilt })
        })
      }
      if (Date.now() >= nextSample && snapshots.length < 9) {
        nextSample += tenthMs
        snapshots.push(await sample())
      }
    }
    await Promise.all(writes)
    if (snapshots.length < 10) snapshots.push(await sample())
    curveDone = true
    await curveLoop
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
    const inTenth = (i: number) => curve.filter((point) => Math.min(9, Math.floor(point.atMs / tenthMs)) === i)
    const samples: SoakSample[] = snapshots.slice(0, 10).map((s, i) => {
      const total = medianAndPeak(inTenth(i).map((point) => point.totalBytes))
      const index = medianAndPeak(inTenth(i).map((point) => point.pendingIndexBytes))
      return {
        ...s,
        totalMedianBytes: total.median,
        totalPeakBytes: total.peak,
        pendingIndexMedianBytes: index.median,
        pendingIndexPeakBytes: index.peak,
        p50Ms: percentile(byTenth[i]!, 50),
        p99Ms: percentile(byTenth[i]!, 99),
        handled: byTenth[i]!.length,
      }
    })
    const missing = written - ids.size
    // the second tenth against the last (a run too short for both compares nothing: NaN, no target met)
    const verdict = soakVerdict(samples[1] ?? nothing, samples.at(-1) ?? nothing, { written, handled, duplicates, missing })
    return {
      seconds,
      ratePerSecond,
      replicas,
      cleanupEverySeconds: cleanupEveryMs / 1000,
      samples,
      written,
      handled,
      duplicates,
      missing,
      ...verdict,
      curveEverySeconds: curveEveryMs / 1000,
      curve,
      cleanups,
      pgstattuple: pgstattuple!,
    }
  } finally {
    curveDone = true
    await curveLoop.catch(() => {})
    await Promise.all(pollers.map((poller) => poller.stop()))
    await curveSql.end()
    await sql.end()
  }
}

const nothing = { totalBytes: Number.NaN, totalMedianBytes: Number.NaN, totalPeakBytes: Number.NaN, pendingIndexBytes: Number.NaN, pendingIndexMedianBytes: Number.NaN, pendingIndexPeakBytes: Number.NaN, p99Ms: Number.NaN }

function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1).padStart(6)} MB`
}
