// The drain with a ctx.tx() write per event against the no-op handler, 1 poller × batch 250, in one scratch schema:
// bench's ctx.tx cases alone, for comparing two builds (run with each build's dist/ in turn, alternating).
// `txBatch` is --tx-mode batch: a build without it runs that case in its only mode, one savepoint per event.
// Run: npm run build && node test/bench/ctx-tx-drain.mjs $PWD/dist [events]
import postgres from 'postgres'
const dist = process.argv[2]
const events = Number(process.argv[3] ?? 10000)
const { openScratchDatabase } = await import(`${dist}/tools/scratch-database.js`)
const { drainBench } = await import(`${dist}/tools/bench/drain-bench.js`)
const { migrate } = await import(`${dist}/outbox/migrate.js`)
const scratch = await openScratchDatabase('bench', process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres')
const sql = postgres(scratch.url, { max: 1, onnotice: () => {} })
try {
  await migrate({ sql, schema: scratch.schema })
  const noop = await drainBench(sql, scratch.url, scratch.schema, 'poller', 1, 250, events)
  const tx = await drainBench(sql, scratch.url, scratch.schema, 'poller', 1, 250, events, { handler: 'tx' })
  const txBatch = await drainBench(sql, scratch.url, scratch.schema, 'poller', 1, 250, events, { handler: 'tx', txMode: 'batch' })
  const ratio = (result) => +(result.eventsPerSecond / noop.eventsPerSecond).toFixed(3)
  console.log(JSON.stringify({ noop: Math.round(noop.eventsPerSecond), tx: Math.round(tx.eventsPerSecond), ratio: ratio(tx), txBatch: Math.round(txBatch.eventsPerSecond), batchRatio: ratio(txBatch), noopBatchP50: +noop.batchP50Ms.toFixed(1), txBatchP50: +tx.batchP50Ms.toFixed(1), txBatchModeP50: +txBatch.batchP50Ms.toFixed(1) }))
} finally {
  await sql.end()
  await scratch.close()
}
