// Drain under --ordering group next to --ordering entity and unordered, in the same round: only the ratios are
// steady on a busy machine. usage: npm run build && DATABASE_URL=… node test/bench/group-drain.mjs [rounds=3] [events=100000]
// One poller × batch 250, events spread round-robin over events ÷ 50 entities; "group = entity" gives each entity
// its own group (the second probe's cost alone), "5 per group" puts five entities in each group.
import postgres from 'postgres'
import { drainBench } from '../../dist/tools/bench/drain-bench.js'
import { migrate } from '../../dist/outbox/migrate.js'
import { openScratchDatabase } from '../../dist/tools/scratch-database.js'

const rounds = Number(process.argv[2] ?? 3)
const events = Number(process.argv[3] ?? 100_000)
const entities = Math.round(events / 50)
const scratch = await openScratchDatabase('groupdrain', process.env.DATABASE_URL)
const sql = postgres(scratch.url, { max: 1, onnotice: () => {} })
const variants = {
  unordered: { entities },
  entity: { entities, ordering: 'entity' },
  'group = entity': { entities, entitiesPerGroup: 1, ordering: 'group' },
  '5 per group': { entities, entitiesPerGroup: 5, ordering: 'group' },
}
const ratios = {}
try {
  await migrate({ sql, schema: scratch.schema, ordering: 'group' })
  for (let round = 1; round <= rounds; round++) {
    const rates = {}
    for (const [name, variant] of Object.entries(variants)) rates[name] = (await drainBench(sql, scratch.url, scratch.schema, 'poller', 1, 250, events, variant)).eventsPerSecond
    for (const name of Object.keys(variants)) {
      if (name !== 'unordered' && name !== 'entity') (ratios[`${name} ÷ entity`] ??= []).push(rates[name] / rates.entity)
      if (name !== 'unordered') (ratios[`${name} ÷ unordered`] ??= []).push(rates[name] / rates.unordered)
    }
    console.log(`round ${round}: ${Object.entries(rates).map(([name, rate]) => `${name} ${Math.round(rate)}/s`).join(', ')}`)
  }
  for (const [key, values] of Object.entries(ratios)) {
    const sorted = [...values].sort((a, b) => a - b)
    console.log(`${key}: median ${sorted[Math.floor(sorted.length / 2)].toFixed(2)} (${sorted.map((v) => v.toFixed(2)).join(', ')})`)
  }
} finally {
  await sql.end()
  await scratch.close()
}
