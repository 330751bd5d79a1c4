// A batch claimed from one partition: its settlement through the parent against the same statements on the
// partition (as the poller sends them since it settles there), on one connection, alternating batch by batch, over
// N pre-filled events in today's partition; and, with `plain`, the claim and settlement of a plain outbox. Prints
// the median milliseconds of a claim (BEGIN and the claim, one round trip) and of a settlement (with its COMMIT).
// Usage: npm run build && DATABASE_URL=postgres://… node test/bench/partition-settle-ab.mjs [events] [plain]
import postgres from 'postgres'
import { migrate } from '../../dist/outbox/migrate.js'
import { outboxTable } from '../../dist/outbox/outbox-table.js'
import { claimQueries, outboxClaimBatch } from '../../dist/poller/claim.js'
import { ClaimPartition } from '../../dist/poller/claim-partition.js'
import { outboxSettleBatch, settleQueries } from '../../dist/poller/settle.js'
import { samplePayloadSql } from '../../dist/tools/bench/drain-bench.js'

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const events = Number(process.argv[2] ?? 200000)
const plain = process.argv[3] === 'plain'
const schema = 'bench_partition_settle'
const admin = postgres(url, { onnotice: () => {} })
const sql = postgres(url, { max: 1, onnotice: () => {} })
try {
  await admin.unsafe(`drop schema if exists ${schema} cascade`)
  await migrate({ sql: admin, schema, partitionBy: plain ? undefined : 'day' })
  await admin.unsafe(`insert into ${schema}.outbox (event_type, entity_type, entity_id, payload) select 'issue.created', 'issue', n::text, ${samplePayloadSql} from generate_series(1, $1::int) n`, [events])
  await admin.unsafe(`analyze ${schema}.outbox`)
  const outbox = outboxTable(schema, 'outbox')
  const parent = claimQueries(outbox)
  const parentSettle = settleQueries(outbox)
  const partition = new ClaimPartition(outbox, (table) => claimQueries(outbox, undefined, undefined, table))
  if (!plain) partition.enable()
  const ms = { claim: [], settleParent: [], settlePartition: [] }
  for (let batchNo = 0; ; batchNo++) {
    await partition.locate(sql)
    const queries = partition.queries(parent, false)
    const started = performance.now()
    const batch = await outboxClaimBatch(sql, queries, { batchSize: 250, maxBytes: 1e12, suspects: true, fromId: '0' })
    const claimed = performance.now()
    if (batch.events.length === 0) {
      await sql.unsafe('commit')
      break
    }
    partition.claimed(queries, batch, 250)
    const onPartition = queries !== parent && batchNo % 2 === 0
    await outboxSettleBatch(sql, onPartition ? partition.settleQueries(queries, parentSettle) : parentSettle, { processed: batch.events, failed: [], held: [], holdMs: 0, deferred: [], deferMs: 0 }, 5)
    if (queries === parent && !plain) continue // the first claims, through the parent: neither kind
    ms.claim.push(claimed - started)
    ms[onPartition ? 'settlePartition' : 'settleParent'].push(performance.now() - claimed)
  }
  const median = (values) => values.length === 0 ? undefined : Number([...values].sort((a, b) => a - b)[Math.floor(values.length / 2)].toFixed(3))
  const settled = plain ? { settleMs: median(ms.settleParent) } : { settleThroughParentMs: median(ms.settleParent), settleOnPartitionMs: median(ms.settlePartition) }
  console.log(JSON.stringify({ layout: plain ? 'plain' : 'partitioned by day', events, batches: ms.claim.length, claimMs: median(ms.claim), ...settled }))
} finally {
  await sql.end()
  await admin.unsafe(`drop schema if exists ${schema} cascade`)
  await admin.end()
}
