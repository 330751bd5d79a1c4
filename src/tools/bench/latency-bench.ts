import postgres from 'postgres'
import { captureTable } from '../../capture/capture.js'
import { outboxTable, pendingCondition, quoteIdent } from '../../outbox/outbox-table.js'
import { percentile } from './percentiles.js'
import { startBenchProcesses } from './bench-processes.js'

export interface LatencyResult {
  name: string
  ratePerSecond: number
  events: number
  p50Ms: number
  p95Ms: number
  p99Ms: number
  maxMs: number
}

/**
 * A writer commits single-row inserts into a captured table at a fixed rate, each its own transaction;
 * one poller (default settings) records, for each event, the time from the event's created_at (the
 * writer's transaction start, a fraction of a millisecond before its commit) to its handler's start.
 * The writer's sessions do not wait for the WAL flush, which on a slow disk takes longer than the whole
 * delivery and would be measured instead of the poller.
 */
/** How the measured poller connects, when not as the writer does: through a pooler, and how it learns of new events. */
export interface LatencyPoller {
  url?: string
  listenUrl?: string
  listen?: boolean
}

/** Called around the writes: just before the first, and just after the last (before the poller catches up). */
export interface LatencyHooks {
  beforeWrites?: () => Promise<void>
  afterWrites?: () => Promise<void>
}

export async function latencyBench(url: string, schema: string, name: string, ratePerSecond: number, seconds: number, through: LatencyPoller = {}, hooks: LatencyHooks = {}): Promise<LatencyResult> {
  // synchronous_commit off for the writer only: its commit becomes visible (and notifies) without waiting
  // for the disk flush, so created_at stays within a fraction of a millisecond of the commit, as measured.
  const sql = postgres(url, { max: 8, onnotice: () => {}, connection: { synchronous_commit: 'off' } as Record<string, string> })
  const outbox = outboxTable(schema, 'outbox')
  const table = `${quoteIdent(schema)}.latency_items`
  await sql.unsafe(`create table if not exists ${table} (id bigserial primary key, name text, created_at timestamptz default now())`)
  await captureTable(sql, outbox, { table, entity: 'item' })
  await sql.unsafe(`truncate ${outbox.qualified}`)
  const [poller] = await startBenchProcesses(1, { mode: 'poller', url: through.url ?? url, listenUrl: through.listenUrl, listen: through.listen, schema, batchSize: 250, recordLatency: true })
  try {
    // let the poller settle into its idle state (flag raised, asleep) before the first write
    await new Promise((resolve) => setTimeout(resolve, 500))
    await hooks.beforeWrites?.()
    const events = Math.round(ratePerSecond * seconds)
    const tickMs = Math.max(1000 / ratePerSecond, 10)
    const perTick = Math.max(1, Math.round((ratePerSecond * tickMs) / 1000))
    const started = performance.now()
    const writes: Promise<unknown>[] = []
    for (let written = 0, tick = 0; written < events; tick++) {
      const due = started + tick * tickMs
      const wait = due - performance.now()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
      // postgres.js sends a query only once it is awaited (or then'd): start each write now
      for (let i = 0; i < perTick && written < events; i++, written++) writes.push(sql.unsafe(`insert into ${table} (name) values ('x')`).execute())
    }
    await Promise.all(writes)
    await hooks.afterWrites?.()
    for (;;) {
      const [{ pending }] = await sql.unsafe(`select count(*)::int as pending from ${outbox.qualified} where ${pendingCondition}`)
      if (pending === 0) break
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const { latencyMs } = await poller!.report()
    return { name, ratePerSecond, events: latencyMs.length, p50Ms: percentile(latencyMs, 50), p95Ms: percentile(latencyMs, 95), p99Ms: percentile(latencyMs, 99), maxMs: latencyMs.reduce((a, b) => Math.max(a, b), Number.NEGATIVE_INFINITY) }
  } finally {
    await poller!.stop()
    await sql.end()
  }
}
