import type { Sql } from 'postgres'
import { outboxTable, pendingCondition, quoteIdent } from '../../outbox/outbox-table.js'
import { median, percentile } from './percentiles.js'
import { startBenchProcesses } from './bench-processes.js'
import { createFloorTable } from './floor-table.js'

export type DrainMode = 'poller' | 'bare' | 'floor'

export interface DrainResult {
  name: string
  /**
   * `floor`: the shared floors' bare loop on the minimal table; `bare`: the same loop on our outbox table;
   * `writes`: the bench handler's ctx.tx() writes alone, no outbox (writes-alone-bench.ts).
   */
  mode: DrainMode | 'writes'
  processes: number
  batchSize: number
  events: number
  eventsPerSecond: number
  /** Highest peak RSS (VmHWM) among the processes (MB). */
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
export interface DrainVariant {
  /** Per-entity or per-group ordering, over `entities` entities (events spread round-robin). */
  ordering?: 'none' | 'entity' | 'group'
  entities?: number
  /** Entities per group (entity e in group e ÷ this); default: no group. */
  entitiesPerGroup?: number
  /** `tx`: each event writes one row through ctx.tx(). */
  handler?: 'noop' | 'tx'
  /** The poller's `--tx-mode` (default `event`). */
  txMode?: 'event' | 'batch'
  /** Relay every event to this sink (a --sink spec) instead of a no-op handler. */
  sink?: string
  sinkSecret?: string
  /** The poller's `overlap` (default true: a relay to Redis or RabbitMQ has two batches in flight). */
  overlap?: boolean
  label?: string
  /** Called once the processes are connected, before the events are written, and once they are drained. */
  onReady?: () => Promise<void>
  onDrained?: () => Promise<void>
}

/** The table the bench's `tx` handler writes one row per event into, created if missing, emptied. */
export async function emptyBenchEffects(sql: Sql, schema: string): Promise<void> {
  await sql.unsafe(`create table if not exists ${quoteIdent(schema)}.bench_effects (event_id uuid primary key)`)
  await sql.unsafe(`truncate ${quoteIdent(schema)}.bench_effects`)
}

export async function drainBench(sql: Sql, url: string, schema: string, mode: DrainMode, processes: number, batchSize: number, events: number, variant: DrainVariant = {}): Promise<DrainResult> {
  const table = outboxTable(schema, 'outbox')
  const outbox = mode === 'floor' ? await createFloorTable(sql, schema) : table.qualified
  await sql.unsafe(`truncate ${outbox}`)
  if (mode !== 'floor') {
    await sql.unsafe(`delete from ${table.settings} where name = 'ordering'`) // each run chooses its own ordering mode
    await emptyBenchEffects(sql, schema)
  }
  const workers = await startBenchProcesses(processes, mode === 'poller' ? { mode, url, schema, batchSize, ordering: variant.ordering, handler: variant.handler, txMode: variant.txMode, sink: variant.sink, sinkSecret: variant.sinkSecret, overlap: variant.overlap } : { mode, url, schema, batchSize })
  try {
    await variant.onReady?.()
    const entityId = variant.entities === undefined ? 'n::text' : `(n % ${Math.trunc(variant.entities)})::text`
    const group = variant.entitiesPerGroup === undefined ? { column: '', value: '' } : { column: ', group_key', value: `, ((${entityId})::bigint / ${Math.trunc(variant.entitiesPerGroup)})::text` }
    // every event below is created between these two (its created_at is the insert's now()): the end check's bounds
    const [{ since }] = await sql.unsafe<Array<{ since: string }>>('select now()::text as since')
    // the same events, the same payloads, in either table
    await sql.unsafe(`insert into ${outbox} (event_type, entity_type, entity_id, payload${group.column}) select 'issue.created', 'issue', ${entityId}, ${samplePayloadSql}${group.value} from generate_series(1, $1::int) n`, [events])
    const [{ until }] = await sql.unsafe<Array<{ until: string }>>('select now()::text as until')
    await sql.unsafe(`analyze ${outbox}`)
    for (const worker of workers) worker.go() // pollers were already woken by the insert's NOTIFY
    // Whether any event is left, read from the pending indexes: a count of the pending rows was a (parallel)
    // scan of the whole table every 50 ms, 10-15 % of the machine's CPU taken from the drain it measured. Bounded
    // by the events' created_at, so that on a partitioned outbox it is planned over the partition that holds them
    // only: over all of them, with a week of hourly ones kept, it took 12 ms every 50 ms (0.4 ms bounded; plain 0.2-0.4).
    const created = 'created_at >= $1::timestamptz and created_at <= $2::timestamptz'
    const left = mode === 'floor'
      ? `select exists (select 1 from ${outbox} where processed_at is null and ${created}) as left`
      : `select exists (select 1 from ${outbox} where ${pendingCondition} and retry_at is null and ${created}) or exists (select 1 from ${outbox} where ${pendingCondition} and retry_at is not null and ${created}) as left`
    for (;;) {
      const [{ left: some }] = await sql.unsafe(left, [since, until])
      if (!some) break
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    await variant.onDrained?.()
    const [{ seconds }] = await sql.unsafe(`select extract(epoch from max(processed_at) - min(processed_at))::float8 as seconds from ${outbox}`)
    const reports = await Promise.all(workers.map((worker) => worker.report()))
    const batches = reports.flatMap((report) => report.batchMs)
    return {
      name: `${processes} ${mode === 'poller' ? 'poller' : 'bare loop'}${processes > 1 ? 's' : ''}${mode === 'floor' ? ' (minimal table)' : mode === 'bare' ? ' (our table)' : ''} × batch ${batchSize}${variant.label ? `, ${variant.label}` : ''}`,
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
    // every event of the run is a dead row version now: emptied, so that no autovacuum of them runs during the next drain
    await sql.unsafe(`truncate ${outbox}`)
  }
}
