// node txbench.mjs <dist dir> <events> : no-op drain, then a ctx.tx write per event, 1 poller × 250, same scratch schema
import postgres from 'postgres'
const dist = process.argv[2]
const events = Number(process.argv[3] ?? 10000)
const { openScratchDatabase } = await import(`${dist}/tools/scratch-database.js`)
const { drainBench } = await import(`${dist}/tools/bench/drain-bench.js`)
const { migrate } = await import(`${dist}/outbox/migrate.js`)
const scratch = await openScratchDatabase('bench', 'postgres://postgres@127.0.0.1:5432/postgres')
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
