import type { Sql } from 'postgres'
import { migrate } from '../../outbox/migrate.js'
import { quoteIdent } from '../../outbox/outbox-table.js'
import type { PartitionBy } from '../../outbox/partition-layout.js'
import { type DrainResult, drainBench } from './drain-bench.js'
import { median } from './percentiles.js'

export interface PartitionedDrainPair {
  processes: number
  batchSize: number
  plain: DrainResult[]
  partitioned: DrainResult[]
  /** partitioned ÷ plain events/s, per round (each round runs the two back to back). */
  ratios: number[]
  medianRatio: number
}

/**
 * The drain of the plain outbox (in `schema`) against a partitioned one (created in `<schema>_partitioned`, dropped
 * at the end), the same events and pollers, `rounds` times back to back for each configuration: the ratio of
 * each pair is what stays steady on a busy machine.
 */
export async function partitionedDrainBench(sql: Sql, url: string, schema: string, by: PartitionBy, events: number, rounds: number, say: (line: string) => void): Promise<PartitionedDrainPair[]> {
  const partitionedSchema = `${schema}_partitioned`
  await migrate({ sql, schema: partitionedSchema, partitionBy: by })
  try {
    const pairs: PartitionedDrainPair[] = []
    for (const [processes, batchSize] of [[1, 250], [3, 250]] as const) {
      const pair: PartitionedDrainPair = { processes, batchSize, plain: [], partitioned: [], ratios: [], medianRatio: 0 }
      for (let round = 0; round < rounds; round++) {
        const plain = await drainBench(sql, url, schema, 'poller', processes, batchSize, events, { label: 'plain' })
        const partitioned = await drainBench(sql, url, partitionedSchema, 'poller', processes, batchSize, events, { label: `partitioned by ${by}` })
        pair.plain.push(plain)
        pair.partitioned.push(partitioned)
        pair.ratios.push(partitioned.eventsPerSecond / plain.eventsPerSecond)
        say(`  ${processes} poller${processes > 1 ? 's' : ''} × batch ${batchSize}, round ${round + 1}: plain ${Math.round(plain.eventsPerSecond).toLocaleString('en')} events/s, partitioned ${Math.round(partitioned.eventsPerSecond).toLocaleString('en')} events/s, ${pair.ratios.at(-1)!.toFixed(2)}×`)
      }
      pair.medianRatio = median(pair.ratios)
      say(`  ${processes} poller${processes > 1 ? 's' : ''} × batch ${batchSize}: median ${pair.medianRatio.toFixed(2)}× (${Math.min(...pair.ratios).toFixed(2)}–${Math.max(...pair.ratios).toFixed(2)}), plain median ${Math.round(median(pair.plain.map((r) => r.eventsPerSecond))).toLocaleString('en')}, partitioned median ${Math.round(median(pair.partitioned.map((r) => r.eventsPerSecond))).toLocaleString('en')} events/s`)
      pairs.push(pair)
    }
    return pairs
  } finally {
    await sql.unsafe(`drop schema if exists ${quoteIdent(partitionedSchema)} cascade`)
  }
}
