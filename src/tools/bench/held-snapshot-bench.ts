import postgres from 'postgres'
import { outboxReindexBloated } from '../../ops/maintenance.js'
import { outboxTable, quoteIdent } from '../../outbox/outbox-table.js'
import { latencyBench, type LatencyResult } from './latency-bench.js'

export interface HeldSnapshotResult {
  ratePerSecond: number
  heldSeconds: number
  /** The same writes and poller without, then with, a REPEATABLE READ snapshot held for the whole run. */
  without: LatencyResult
  held: LatencyResult
  /** Dead tuples of the outbox at the end of the held run. */
  deadTuplesHeld: number
  /** Size of the pending index (bytes): at the end of the run without, at the end of the held run, after VACUUM, after cleanup's rebuild. */
  pendingIndexBytes: { without: number; held: number; afterVacuum: number; afterCleanup: number }
}

/**
 * Commit-to-handler latency while a session holds a snapshot (a long report): VACUUM may remove no dead row of
 * the outbox meanwhile. Then the snapshot ends, VACUUM runs (as autovacuum would) and cleanup rebuilds what
 * stayed bloated.
 */
export async function heldSnapshotBench(url: string, schema: string, ratePerSecond: number, baselineSeconds: number, heldSeconds: number): Promise<HeldSnapshotResult> {
  const sql = postgres(url, { max: 2, onnotice: () => {} })
  const outbox = outboxTable(schema, 'outbox')
  const pendingIndex = `${quoteIdent(outbox.schema)}.${quoteIdent(`${outbox.table}_pending`)}`
  const indexBytes = async () => Number((await sql<{ bytes: string }[]>`select pg_relation_size(${pendingIndex}::regclass) as bytes`)[0]!.bytes)
  const sizes = { without: 0, held: 0, afterVacuum: 0, afterCleanup: 0 }
  let deadTuplesHeld = 0
  try {
    const without = await latencyBench(url, schema, 'no snapshot held', ratePerSecond, baselineSeconds, {}, { afterWrites: async () => void (sizes.without = await indexBytes()) })
    const holder = await sql.reserve()
    let holding = false
    const held = await latencyBench(url, schema, `a snapshot held ${heldSeconds} s`, ratePerSecond, heldSeconds, {}, {
      beforeWrites: async () => {
        await holder`begin isolation level repeatable read`
        await holder`select 1` // the snapshot is taken here
        holding = true
      },
      afterWrites: async () => {
        sizes.held = await indexBytes()
        const [stats] = await sql<{ dead: string }[]>`select n_dead_tup::text as dead from pg_stat_user_tables where relid = ${outbox.qualified}::regclass`
        deadTuplesHeld = Number(stats?.dead ?? 0)
        await holder`rollback`
        holding = false
      },
    })
    if (holding) await holder`rollback`
    holder.release()
    await sql.unsafe(`vacuum ${outbox.qualified}`)
    sizes.afterVacuum = await indexBytes()
    await outboxReindexBloated(sql, outbox)
    sizes.afterCleanup = await indexBytes()
    return { ratePerSecond, heldSeconds, without, held, deadTuplesHeld, pendingIndexBytes: sizes }
  } finally {
    await sql.end()
  }
}
