// The drain, no-op handler, against the floor (the bare loop on the minimal table), per configuration in one
// scratch schema, for comparing two builds: run it with each build's dist/ in turn, alternating.
// Run: npm run build && node test/bench/drain-vs-floor.mjs $PWD/dist [events]   (DATABASE_URL, default the local server)
import postgres from 'postgres'
const dist = process.argv[2]
const events = Number(process.argv[3] ?? 30000)
const { openScratchDatabase } = await import(`${dist}/tools/scratch-database.js`)
const { drainBench } = await import(`${dist}/tools/bench/drain-bench.js`)
const { migrate } = await import(`${dist}/outbox/migrate.js`)
const scratch = await openScratchDatabase('bench', process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres')
const sql = postgres(scratch.url, { max: 1, onnotice: () => {} })
const out = {}
try {
  await migrate({ sql, schema: scratch.schema })
  for (const [p, b] of [[1, 250], [3, 250], [1, 1000]]) {
    const floor = await drainBench(sql, scratch.url, scratch.schema, 'floor', p, b, events)
    const poller = await drainBench(sql, scratch.url, scratch.schema, 'poller', p, b, events)
    out[`${p}x${b}`] = { floor: Math.round(floor.eventsPerSecond), poller: Math.round(poller.eventsPerSecond), ratio: +(poller.eventsPerSecond / floor.eventsPerSecond).toFixed(3) }
  }
  console.log(JSON.stringify(out))
} finally {
  await sql.end()
  await scratch.close()
}
