// The drain with a ctx.tx() write per event against the no-op handler, 1 poller × batch 250, in one scratch schema:
// bench's ctx.tx case alone, for comparing two builds (run with each build's dist/ in turn, alternating).
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
  console.log(JSON.stringify({ noop: Math.round(noop.eventsPerSecond), tx: Math.round(tx.eventsPerSecond), ratio: +(tx.eventsPerSecond / noop.eventsPerSecond).toFixed(3), txBatchP50: +tx.batchP50Ms.toFixed(1) }))
} finally {
  await sql.end()
  await scratch.close()
}
