import { cpus } from 'node:os'
import type { Command } from 'commander'
import postgres from 'postgres'
import { captureBench, type CaptureResult } from '../tools/bench/capture-bench.js'
import { type DrainResult, drainBench } from '../tools/bench/drain-bench.js'
import { writesAloneBench } from '../tools/bench/writes-alone-bench.js'
import { takingTurns } from '../tools/bench/taking-turns.js'
import { type PartitionedDrainPair, partitionedDrainBench } from '../tools/bench/partitioned-drain-bench.js'
import { parsePartitionBy } from '../outbox/partition-layout.js'
import { type LatencyPoller, latencyBench, type LatencyResult } from '../tools/bench/latency-bench.js'
import { localWebhook, relayBench, type RelayResult } from '../tools/bench/relay-bench.js'
import { heldSnapshotBench, type HeldSnapshotResult } from '../tools/bench/held-snapshot-bench.js'
import { soakBench, type SoakResult } from '../tools/bench/soak-bench.js'
import { soakTargets } from '../tools/bench/soak-verdict.js'
import { median } from '../tools/bench/percentiles.js'
import { tenantsBench, type TenantsResult } from '../tools/bench/tenants-bench.js'
import { parseDuration } from '../duration.js'
import { defaults as pollerDefaults, integerOption } from '../poller/poller-options.js'
import { ConfigError } from '../errors.js'
import { migrate } from '../outbox/migrate.js'
import { quoteIdent } from '../outbox/outbox-table.js'
import { openScratchDatabase } from '../tools/scratch-database.js'
import { parseSink } from '../sinks/parse-sink.js'
import { checkDatabaseUrl } from '../database/database-url.js'
import { checkedDatabaseUrl } from './database-url-option.js'
import { listFlag } from './options.js'
import { ExitCode } from '../supervisor/exit-codes.js'

const parts = ['drain', 'latency', 'capture', 'relay'] as const
type Part = (typeof parts)[number]

interface BenchFlags {
  sink: string[]
  sinkSecret?: string
  events: string
  seconds: string
  only?: string[]
  json?: boolean
  poolerUrl?: string
  holdSnapshot?: string
  soak?: string
  rate: string
  partitionBy?: string
  rounds: string
  tenants?: string
  hot: string
  handlerMs: string
  tenantConcurrency: string
}

/** The whole benchmark: drain throughput against the bare loop, latency, capture cost. */
export async function benchCommand(command: Command): Promise<number> {
  const flags = command.opts<BenchFlags>()
  const events = integerOption(flags.events, '--events', 100_000, 1_000, 10_000_000)
  const seconds = integerOption(flags.seconds, '--seconds', 5, 1, 600)
  const holdMs = flags.holdSnapshot === undefined ? undefined : boundedDuration(flags.holdSnapshot, '--hold-snapshot')
  const soakMs = flags.soak === undefined ? undefined : boundedDuration(flags.soak, '--soak')
  const rate = integerOption(flags.rate, '--rate', 2000, 10, 100_000)
  const partitionBy = parsePartitionBy(flags.partitionBy)
  const rounds = integerOption(flags.rounds, '--rounds', 3, 1, 20)
  const tenants = flags.tenants === undefined ? undefined : integerOption(flags.tenants, '--tenants', 500, 2, 10_000)
  const hot = integerOption(flags.hot, '--hot', 1, 1, 10_000)
  if (tenants !== undefined && hot >= tenants) throw new ConfigError(`--hot must be below --tenants (got ${hot} of ${tenants})`)
  const handlerMs = integerOption(flags.handlerMs, '--handler-ms', 1, 0, 10_000)
  const tenantConcurrency = integerOption(flags.tenantConcurrency, '--tenant-concurrency', 1, 1, 100)
  // --hold-snapshot, --soak, --partition-by and --tenants are runs of their own: the other parts only when --only names them
  const defaultParts = holdMs === undefined && soakMs === undefined && partitionBy === undefined && tenants === undefined ? [...parts] : []
  const only = new Set<Part>((listFlag(flags.only) ?? defaultParts).map((part) => {
    if (!(parts as readonly string[]).includes(part)) throw new ConfigError(`--only must list parts among ${parts.join(', ')} (got ${JSON.stringify(part)})`)
    return part as Part
  }))
  for (const spec of flags.sink) if (spec !== localWebhook) parseSink(spec, '--sink') // bad specs fail before anything starts
  if (flags.sink.length === 0 && flags.only !== undefined && only.has('relay')) throw new ConfigError('--only relay needs a --sink (a broker URL, or webhook for a local receiver)')
  const databaseUrl = checkedDatabaseUrl(command)
  if (flags.poolerUrl !== undefined) {
    checkDatabaseUrl(flags.poolerUrl, '--pooler-url')
    if (databaseUrl === undefined) throw new ConfigError('--pooler-url needs --database-url (or DATABASE_URL): the database the pooler stands in front of')
  }
  const say = (line: string) => void (flags.json ? process.stderr : process.stdout).write(`${line}\n`)

  const scratch = await openScratchDatabase('bench', databaseUrl)
  // Ctrl-C or a kill still drops the scratch schema (or stops the embedded server)
  const onSignal = () => void scratch.close().finally(() => process.exit(130))
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const sql = postgres(scratch.url, { max: 1, onnotice: () => {} })
  const drain: Array<DrainResult & { ratios?: Record<string, number> }> = []
  const latency: LatencyResult[] = []
  const capture: CaptureResult[] = []
  const relay: RelayResult[] = []
  let heldSnapshot: HeldSnapshotResult | undefined
  let soak: SoakResult | undefined
  let partitioned: PartitionedDrainPair[] | undefined
  let tenantsResult: TenantsResult[] | undefined
  try {
    // the outbox a default `migrate` creates: the drains and relays run on the table users run on
    await migrate({ sql, schema: scratch.schema })
    say(`outbox-poller bench on ${scratch.description}, ${cpus().length} CPUs, Node ${process.version}`)
    if (partitionBy !== undefined) {
      say(`\ndrain ${events.toLocaleString('en')} pre-filled no-op events, the plain outbox against one partitioned by ${partitionBy}, back to back, ${rounds} rounds`)
      partitioned = await partitionedDrainBench(sql, scratch.url, scratch.schema, partitionBy, events, rounds, say)
    }
    if (only.has('drain')) {
      say(`\ndrain ${events.toLocaleString('en')} pre-filled no-op events (events/s from the first to the last batch)`)
      say('  floor: the bare loop on the minimal table; our table: the same loop on our outbox; RSS: peak VmHWM, each process alone')
      const configs: Array<[number, number]> = [[1, 250], [3, 250], [1, 1000], [1, 50], [5, 250]]
      for (const [processes, batch] of configs) {
        // each configuration next to its floors, in the same run: only the ratio is steady on a busy machine
        const floor = await drainBench(sql, scratch.url, scratch.schema, 'floor', processes, batch, events)
        const sameTable = await drainBench(sql, scratch.url, scratch.schema, 'bare', processes, batch, events)
        const result = await drainBench(sql, scratch.url, scratch.schema, 'poller', processes, batch, events)
        drain.push({ ...floor, ratios: {} }, { ...sameTable, ratios: { floor: ratio(sameTable, floor) } })
        drain.push({ ...result, ratios: { floor: ratio(result, floor), sameTable: ratio(result, sameTable), rssFloor: result.peakRssMb / floor.peakRssMb } })
        say(formatDrain(floor))
        say(`${formatDrain(sameTable)}   ${ratio(sameTable, floor).toFixed(2)}× the floor`)
        say(`${formatDrain(result)}   ${ratio(result, floor).toFixed(2)}× the floor, ${ratio(result, sameTable).toFixed(2)}× our table's, RSS ${(result.peakRssMb / floor.peakRssMb).toFixed(2)}× the floor's`)
      }
      // per-entity and per-group ordering next to unordered, on an outbox with the indexes they need (migrate
      // --ordering group), in a schema of its own; then exactly-once effects through ctx.tx on the default outbox
      const entities = Math.max(1, Math.round(events / 50))
      const { unordered, ordered, grouped } = await orderedDrains(sql, scratch.url, `${scratch.schema}_ordered`, entities, events)
      const withTx = await drainBench(sql, scratch.url, scratch.schema, 'poller', 1, 250, events, { handler: 'tx', label: 'a ctx.tx write per event' })
      const withBatchTx = await drainBench(sql, scratch.url, scratch.schema, 'poller', 1, 250, events, { handler: 'tx', txMode: 'batch', label: 'a ctx.tx write per event, --tx-mode batch' })
      const writesAlone = await writesAloneBench(sql, scratch.url, scratch.schema, 250, events, pollerDefaults.concurrency)
      const noop = drain.find((r) => r.mode === 'poller' && r.processes === 1 && r.batchSize === 250)
      // the batch's claim and settlement and its writes take turns on one connection: the most --tx-mode batch can reach
      const txTurns = noop && takingTurns(noop.eventsPerSecond, writesAlone.eventsPerSecond)
      const txRatios: Record<string, number> = noop ? { noop: withTx.eventsPerSecond / noop.eventsPerSecond } : {}
      const batchTxRatios: Record<string, number> = noop ? { noop: withBatchTx.eventsPerSecond / noop.eventsPerSecond, turns: withBatchTx.eventsPerSecond / txTurns! } : {}
      drain.push(unordered, ordered, grouped, { ...withTx, ratios: txRatios }, { ...withBatchTx, ratios: batchTxRatios }, writesAlone)
      say(formatDrain(unordered))
      say(`${formatDrain(ordered)}   ${(ordered.eventsPerSecond / unordered.eventsPerSecond).toFixed(2)}× unordered`)
      say(`${formatDrain(grouped)}   ${(grouped.eventsPerSecond / unordered.eventsPerSecond).toFixed(2)}× unordered, ${(grouped.eventsPerSecond / ordered.eventsPerSecond).toFixed(2)}× --ordering entity`)
      say(`${formatDrain(withTx)}${noop ? `   ${txRatios.noop!.toFixed(2)}× the no-op handler` : ''}`)
      say(`${formatDrain(withBatchTx)}${noop ? `   ${batchTxRatios.noop!.toFixed(2)}× the no-op handler, ${batchTxRatios.turns!.toFixed(2)}× taking turns with the writes alone` : ''}`)
      say(formatDrain(writesAlone))
    }
    if (only.has('relay') && flags.sink.length > 0) {
      say(`\nrelay ${events.toLocaleString('en')} events, confirmed before processed, against the no-op drain and the broker's own ceiling (${events.toLocaleString('en')} confirmed publishes, 1,000 in flight, no database), in turn;`)
      say('"taking turns" is 1 ÷ (1 ÷ drain + 1 ÷ ceiling): the most when a batch\'s claim and settlement and its publishes do not overlap')
      for (const sink of flags.sink) {
        const result = await relayBench(sql, scratch.url, scratch.schema, sink, flags.sinkSecret, events)
        relay.push(result)
        say(formatDrain(result.drain))
        say(`  ${`ceiling of ${result.sink}`.padEnd(44)} ${Math.round(result.ceilingPerSecond).toLocaleString('en').padStart(8)} messages/s`)
        say(`${formatDrain(result.relay)}   ${result.ratio.toFixed(2)}× min(no-op drain, ceiling), ${(result.relay.eventsPerSecond / result.turnsPerSecond).toFixed(2)}× taking turns`)
        if (result.oneBatchAtATime) say(`${formatDrain(result.oneBatchAtATime)}   ${(result.oneBatchAtATime.eventsPerSecond / result.turnsPerSecond).toFixed(2)}× taking turns; two batches in flight: ${(result.relay.eventsPerSecond / result.oneBatchAtATime.eventsPerSecond).toFixed(2)}× this`)
        say(`${formatDrain(result.twoPollers)}   ${(result.twoPollers.eventsPerSecond / result.ceilingPerSecond).toFixed(2)}× the ceiling`)
      }
    }
    if (only.has('latency')) {
      say('\ncommit-to-handler latency (one poller, single-row transactions)')
      // with --pooler-url, each rate also with the poller behind the pooler: LISTEN on a direct connection, or polling only
      const ways: Array<[string, LatencyPoller]> = [['', {}]]
      if (flags.poolerUrl !== undefined) ways.push([', pooler + --listen-url', { url: flags.poolerUrl, listenUrl: scratch.url }], [', pooler + --no-listen', { url: flags.poolerUrl, listen: false }])
      for (const [rateName, rate] of [['idle: one every 50 ms', 20], ['loaded: 1,000/s', 1000]] as const) {
        for (const [way, through] of ways) {
          const name = `${rateName}${way}`
          const result = await latencyBench(scratch.url, scratch.schema, name, rate, seconds, through)
          latency.push(result)
          say(`  ${name.padEnd(flags.poolerUrl === undefined ? 24 : 46)} ${String(result.events).padStart(6)} events  p50 ${ms(result.p50Ms)}  p95 ${ms(result.p95Ms)}  p99 ${ms(result.p99Ms)}  max ${ms(result.maxMs)}`)
        }
      }
    }
    if (only.has('capture')) {
      say(`\ncapture cost: writer transactions/s into a plain table, the same table captured by the floor trigger (a bare to_jsonb row trigger), and by ours`)
      capture.push(...(await captureBench(scratch.url, scratch.schema, seconds, 3, events * 10, say)))
    }
    if (holdMs !== undefined) {
      say(`\ncommit-to-handler latency at ${rate.toLocaleString('en')} captured rows/s (single-row transactions, one poller): ${seconds} s without, then ${holdMs / 1000} s with a REPEATABLE READ snapshot held`)
      heldSnapshot = await heldSnapshotBench(scratch.url, scratch.schema, rate, seconds, holdMs / 1000)
      for (const result of [heldSnapshot.without, heldSnapshot.held]) say(`  ${result.name.padEnd(24)} ${String(result.events).padStart(7)} events  p50 ${ms(result.p50Ms)}  p95 ${ms(result.p95Ms)}  p99 ${ms(result.p99Ms)}  max ${ms(result.maxMs)}`)
      const sizes = heldSnapshot.pendingIndexBytes
      say(`  p99 held ÷ without: ${(heldSnapshot.held.p99Ms / heldSnapshot.without.p99Ms).toFixed(2)}×; dead tuples at the end of the held run: ${heldSnapshot.deadTuplesHeld.toLocaleString('en')}`)
      say(`  pending index: ${kb(sizes.without)} without, ${kb(sizes.held)} held, ${kb(sizes.afterVacuum)} after VACUUM, ${kb(sizes.afterCleanup)} after cleanup (${(sizes.afterCleanup / sizes.without).toFixed(2)}× without)`)
    }
    if (soakMs !== undefined) {
      say(`\nsoak ${soakMs / 1000} s: ${rate.toLocaleString('en')} captured rows/s (transactions of 10 rows), 3 poller replicas, cleanup every ${soakMs / 10_000} s; a sample every tenth`)
      // the embedded server is the bench's own: cleanup's rule gets the pages in use, as where an operator installed it
      if (databaseUrl === undefined) await sql`create extension if not exists pgstattuple`
      soak = await soakBench(scratch.url, scratch.schema, soakMs / 1000, rate, 3, say)
      printSoak(soak, say)
    }
    if (tenants !== undefined) {
      say(`\n${tenants} tenants, one replica (--schemas, --tenant-concurrency ${tenantConcurrency}, a ${handlerMs} ms handler): ${rounds} rounds, each a new replica: first every outbox empty for 10 s; then ${hot} hot tenant${hot === 1 ? '' : 's'} with ${events.toLocaleString('en')} pending events${hot === 1 ? '' : ' each'} while every other tenant gets one event every 2 s, for ${seconds} s`)
      const results = (tenantsResult = await tenantsBench(scratch.url, scratch.schema, { tenants, hot, events, seconds, handlerMs, tenantConcurrency, rounds }, say))
      const mid = (pick: (r: TenantsResult) => number) => `${median(results.map(pick)).toFixed(1)} (${Math.min(...results.map(pick)).toFixed(1)}–${Math.max(...results.map(pick)).toFixed(1)})`
      say(`  median (min–max) of ${rounds} rounds: idle ${mid((r) => r.idleCpuPercent)} % of one core; total ${mid((r) => r.eventsPerSecond)} events/s; cold p50 ${mid((r) => r.coldP50Ms)} ms, p99 ${mid((r) => r.coldP99Ms)} ms`)
    }
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await sql.end()
    await scratch.close()
  }
  if (flags.json) console.log(JSON.stringify({ database: scratch.description, cpus: cpus().length, node: process.version, events, drain, latency, capture, relay, heldSnapshot, soak, partitioned, tenants: tenantsResult }, null, 2))
  return ExitCode.ok
}

function formatDrain(result: DrainResult): string {
  return `  ${result.name.padEnd(48)} ${Math.round(result.eventsPerSecond).toLocaleString('en').padStart(8)} events/s  peak RSS ${result.peakRssMb.toFixed(0).padStart(4)} MB  batch p50 ${ms(result.batchP50Ms)} p99 ${ms(result.batchP99Ms)}`
}

/** A run length: at least 10 s, at most a day. */
function boundedDuration(text: string, name: string): number {
  const value = parseDuration(text, name)
  if (value < 10_000 || value > 86_400_000) throw new ConfigError(`${name} must be between 10s and 1d (got ${JSON.stringify(text)})`)
  return value
}

function kb(bytes: number): string {
  return `${Math.round(bytes / 1024).toLocaleString('en')} kB`
}

/** The three ordering modes' drains on an outbox migrated with --ordering group in `schema` (dropped at the end). */
async function orderedDrains(sql: postgres.Sql, url: string, schema: string, entities: number, events: number): Promise<Record<'unordered' | 'ordered' | 'grouped', DrainResult>> {
  await migrate({ sql, schema, ordering: 'group' })
  try {
    return {
      unordered: await drainBench(sql, url, schema, 'poller', 1, 250, events, { entities, label: `${entities.toLocaleString('en')} entities, unordered` }),
      ordered: await drainBench(sql, url, schema, 'poller', 1, 250, events, { entities, ordering: 'entity', label: `${entities.toLocaleString('en')} entities, --ordering entity` }),
      grouped: await drainBench(sql, url, schema, 'poller', 1, 250, events, { entities, entitiesPerGroup: 5, ordering: 'group', label: `${Math.ceil(entities / 5).toLocaleString('en')} groups of 5 entities, --ordering group` }),
    }
  } finally {
    await sql.unsafe(`drop schema if exists ${quoteIdent(schema)} cascade`)
  }
}

function ratio(result: DrainResult, floor: DrainResult): number {
  return result.eventsPerSecond / floor.eventsPerSecond
}

function printSoak(soak: SoakResult, say: (line: string) => void): void {
  const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`
  say(`  the tenths again, with the median and the peak of the ${soak.curve.length} fine samples (one every ${soak.curveEverySeconds} s):`)
  for (const s of soak.samples) {
    say(`  ${String(s.atSeconds).padStart(4)} s  ${String(s.handled).padStart(7)} handled  latency p50 ${ms(s.p50Ms)}  p99 ${ms(s.p99Ms)}  outbox median ${mb(s.totalMedianBytes)} peak ${mb(s.totalPeakBytes)}  pending index median ${mb(s.pendingIndexMedianBytes)} peak ${mb(s.pendingIndexPeakBytes)}`)
  }
  const last = soak.curve.at(-1)
  const oldest = (pick: (point: SoakResult['curve'][number]) => number) => Math.round(Math.max(0, ...soak.curve.map(pick)))
  say(`  oldest snapshot seen: ${oldest((p) => p.oldestSnapshotSeconds)} s in this database, ${oldest((p) => p.oldestSnapshotElsewhereSeconds)} s in others`)
  say(`  pending index weighed by cleanup against ${soak.pgstattuple ? 'the pages it used before each VACUUM (pgstattuple installed)' : 'its insert churn alone (pgstattuple not installed)'}`)
  say(`  vacuums of the outbox in the run: ${last?.vacuums ?? 0} by cleanup, ${last?.autovacuums ?? 0} by autovacuum; cleanups:`)
  for (const c of soak.cleanups) {
    const rebuilt = c.rebuilt.map((r) => `${r.index.split('.').at(-1)} ${kb(r.bytesBefore)} -> ${kb(r.bytesAfter)}`).join(', ')
    say(`  ${String(Math.round(c.atMs / 1000)).padStart(4)} s  deleted ${c.deleted.toLocaleString('en').padStart(8)} in ${(c.deleteMs / 1000).toFixed(1)} s, VACUUM and rebuild ${(c.maintenanceMs / 1000).toFixed(1)} s${rebuilt === '' ? ', nothing rebuilt' : `, rebuilt ${rebuilt}`}`)
  }
  const verdict = (met: boolean) => (met ? 'met' : 'NOT met')
  say(`  last tenth ÷ second: outbox size ${soak.totalSizeRatio.toFixed(2)}×, pending index ${soak.pendingIndexRatio.toFixed(2)}×, latency p99 ${soak.p99Ratio.toFixed(2)}×`)
  say(`  same, median / peak of the fine samples: outbox size ${soak.totalSizeMedianRatio.toFixed(2)}× / ${soak.totalSizePeakRatio.toFixed(2)}×, pending index ${soak.pendingIndexMedianRatio.toFixed(2)}× / ${soak.pendingIndexPeakRatio.toFixed(2)}×`)
  say(`  written ${soak.written.toLocaleString('en')}, handled ${soak.handled.toLocaleString('en')}, duplicates ${soak.duplicates}, missing ${soak.missing}`)
  say(`  targets (sizes on the sample and the peak alike): outbox size ≤ ${soakTargets.totalSize}× ${verdict(soak.met.totalSize)}, pending index ≤ ${soakTargets.pendingIndex}× ${verdict(soak.met.pendingIndex)}, p99 ≤ ${soakTargets.p99}× ${verdict(soak.met.p99)}, exactly once ${verdict(soak.met.exactlyOnce)}`)
}

function ms(value: number): string {
  return `${value.toFixed(1)} ms`.padStart(9)
}
