// Drain of two builds side by side, against the floor measured in the same round: for a change on the hot path.
// usage: DATABASE_URL=… [ORDERING=entity] node test/bench/drain-ab.mjs <dist before> <dist after> [rounds=3] [events=100000]
// Each round, per configuration: the floor (bare loop, minimal table), the poller of each build, in turn. The after
// build migrates the scratch outbox (give the newer build second).
import path from 'node:path'
import postgres from 'postgres'

const [before, after] = process.argv.slice(2, 4).map((dir) => path.resolve(dir))
const rounds = Number(process.argv[4] ?? 3)
const events = Number(process.argv[5] ?? 100_000)
const ordering = process.env.ORDERING === 'entity' ? 'entity' : 'none' // the pollers' --ordering (one entity per event)
const load = async (dist) => ({
  drain: await import(`${dist}/tools/bench/drain-bench.js`),
  migrate: await import(`${dist}/outbox/migrate.js`),
  scratch: await import(`${dist}/tools/scratch-database.js`),
})
const builds = { before: await load(before), after: await load(after) }
const scratch = await builds.after.scratch.openScratchDatabase('drainab', process.env.DATABASE_URL)
const sql = postgres(scratch.url, { max: 1, onnotice: () => {} })
const ratios = {}
try {
  await builds.after.migrate.migrate({ sql, schema: scratch.schema, ordering: ordering === 'entity' ? 'entity' : undefined })
  for (let round = 1; round <= rounds; round++) {
    for (const [processes, batch] of [[1, 250], [3, 250]]) {
      const floor = await builds.after.drain.drainBench(sql, scratch.url, scratch.schema, 'floor', processes, batch, events)
      // the builds take turns going first, so neither always drains right after the other
      for (const [name, build] of round % 2 === 1 ? Object.entries(builds) : Object.entries(builds).reverse()) {
        const result = await build.drain.drainBench(sql, scratch.url, scratch.schema, 'poller', processes, batch, events, { ordering })
        const key = `${processes}×${batch} ${name}`
        ;(ratios[key] ??= []).push(result.eventsPerSecond / floor.eventsPerSecond)
        console.log(`round ${round} ${key}: ${Math.round(result.eventsPerSecond)} events/s, floor ${Math.round(floor.eventsPerSecond)}: ${(result.eventsPerSecond / floor.eventsPerSecond).toFixed(2)}× the floor`)
      }
    }
  }
  for (const [key, values] of Object.entries(ratios)) {
    const sorted = [...values].sort((a, b) => a - b)
    console.log(`${key}: median ${sorted[Math.floor(sorted.length / 2)].toFixed(2)}× the floor (${sorted.map((v) => v.toFixed(2)).join(', ')})`)
  }
} finally {
  await sql.end()
  await scratch.close()
}
