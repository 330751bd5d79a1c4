import type { Sql } from 'postgres'
import { migrate } from '../../outbox/migrate.js'
import { outboxTable, quoteIdent } from '../../outbox/outbox-table.js'
import type { PartitionBy } from '../../outbox/partition-layout.js'
import { createPartition, partitionRange, periodStart, withLockRetries } from '../../outbox/partition-upkeep.js'
import { type DrainResult, drainBench } from './drain-bench.js'
import { median } from './percentiles.js'

export interface PartitionedDrainPair {
  processes: number
  batchSize: number
  plain: DrainResult[]
  partitioned: DrainResult[]
  /** The partitioned outbox with the partitions of a week's retention kept (7 past periods, as before cleanup drops them). */
  retained: DrainResult[]
  /** partitioned ÷ plain events/s, per round (each round runs the three back to back). */
  ratios: number[]
  retainedRatios: number[]
  medianRatio: number
  medianRetainedRatio: number
}

/** Periods a week's retention keeps before cleanup drops them: 7 days, or 168 hours. */
const retainedPeriods: Record<PartitionBy, number> = { day: 7, hour: 168 }

/**
 * The drain of the plain outbox (in `schema`) against a partitioned one (created in `<schema>_partitioned`), and
 * one that also has the past partitions a week's retention keeps (`<schema>_retained`; both dropped at the end),
 * the same events and pollers, `rounds` times back to back for each configuration, in a rotating order: the ratio
 * within a round is what stays steady on a busy machine.
 */
export async function partitionedDrainBench(sql: Sql, url: string, schema: string, by: PartitionBy, events: number, rounds: number, say: (line: string) => void): Promise<PartitionedDrainPair[]> {
  const partitionedSchema = `${schema}_partitioned`
  const retainedSchema = `${schema}_retained`
  await migrate({ sql, schema: partitionedSchema, partitionBy: by })
  await migrate({ sql, schema: retainedSchema, partitionBy: by })
  const retainedOutbox = outboxTable(retainedSchema, 'outbox')
  const [clock] = await sql<Array<{ now: Date }>>`select now()`
  const periodMs = by === 'day' ? 86_400_000 : 3_600_000
  for (let i = 1; i <= retainedPeriods[by]; i++) {
    const range = partitionRange(retainedOutbox, by, new Date(periodStart(clock!.now, by).getTime() - i * periodMs))
    await withLockRetries(sql, { lockTimeoutMs: 1000, attempts: 3, pauseMs: 100 }, (tx) => createPartition(tx, retainedOutbox, range))
  }
  try {
    const pairs: PartitionedDrainPair[] = []
    for (const [processes, batchSize] of [[1, 250], [3, 250]] as const) {
      const pair: PartitionedDrainPair = { processes, batchSize, plain: [], partitioned: [], retained: [], ratios: [], retainedRatios: [], medianRatio: 0, medianRetainedRatio: 0 }
      for (let round = 0; round < rounds; round++) {
        const runs = {
          plain: () => drainBench(sql, url, schema, 'poller', processes, batchSize, events, { label: 'plain' }),
          partitioned: () => drainBench(sql, url, partitionedSchema, 'poller', processes, batchSize, events, { label: `partitioned by ${by}` }),
          retained: () => drainBench(sql, url, retainedSchema, 'poller', processes, batchSize, events, { label: `partitioned by ${by}, a week retained` }),
        }
        // each round in another order (plain first, then second, then third): no layout always runs after the same one
        const order = rotated(['plain', 'partitioned', 'retained'] as const, round)
        const results: Partial<Record<keyof typeof runs, DrainResult>> = {}
        for (const name of order) results[name] = await runs[name]()
        const { plain, partitioned, retained } = results as Record<keyof typeof runs, DrainResult>
        pair.plain.push(plain)
        pair.partitioned.push(partitioned)
        pair.retained.push(retained)
        pair.ratios.push(partitioned.eventsPerSecond / plain.eventsPerSecond)
        pair.retainedRatios.push(retained.eventsPerSecond / plain.eventsPerSecond)
        say(`  ${processes} poller${processes > 1 ? 's' : ''} × batch ${batchSize}, round ${round + 1} (${order.join(', ')}): plain ${Math.round(plain.eventsPerSecond).toLocaleString('en')} events/s, partitioned ${Math.round(partitioned.eventsPerSecond).toLocaleString('en')} (${pair.ratios.at(-1)!.toFixed(2)}×), with a week's partitions retained ${Math.round(retained.eventsPerSecond).toLocaleString('en')} (${pair.retainedRatios.at(-1)!.toFixed(2)}×)`)
      }
      pair.medianRatio = median(pair.ratios)
      pair.medianRetainedRatio = median(pair.retainedRatios)
      const range = (ratios: number[]) => `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}`
      say(`  ${processes} poller${processes > 1 ? 's' : ''} × batch ${batchSize}: partitioned median ${pair.medianRatio.toFixed(2)}× plain (${range(pair.ratios)}), with a week retained ${pair.medianRetainedRatio.toFixed(2)}× (${range(pair.retainedRatios)}); plain median ${Math.round(median(pair.plain.map((r) => r.eventsPerSecond))).toLocaleString('en')} events/s`)
      pairs.push(pair)
    }
    return pairs
  } finally {
    await sql.unsafe(`drop schema if exists ${quoteIdent(partitionedSchema)}, ${quoteIdent(retainedSchema)} cascade`)
  }
}

/** `items` shifted left by `by` places: round 0 as given, round 1 from the second, … */
function rotated<T>(items: readonly T[], by: number): T[] {
  const shift = by % items.length
  return [...items.slice(shift), ...items.slice(0, shift)]
}
