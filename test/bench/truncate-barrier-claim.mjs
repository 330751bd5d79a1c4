// The ordered claim's truncate barrier: the claim of 250 under --ordering entity over 100,000 fresh events (one
// entity each), in one scratch database, by the build before the barrier and the build with it, alternating
// (BEGIN, claim, ROLLBACK, so the backlog stays). Three states of the outbox, each with its medians:
//   none:  no .truncated event (every outbox, nearly always): the barrier's cost when there is nothing to bar;
//   last:  one pending .truncated event after all the others: each candidate probes the barrier index;
//   held:  one .truncated event before all the others, in flight on another connection: every later event of
//          the type is barred, so the claim walks past all of them and takes nothing (the worst case).
// Run: npm run build && DATABASE_URL=… node test/bench/truncate-barrier-claim.mjs <dist before> <dist after> [claims=300]
import path from 'node:path'
import postgres from 'postgres'

const [before, after] = process.argv.slice(2, 4).map((dir) => path.resolve(dir))
const claims = Number(process.argv[4] ?? 300)
const load = async (dist) => ({ claim: await import(`${dist}/poller/claim.js`), outbox: await import(`${dist}/outbox/outbox-table.js`) })
const builds = { before: await load(before), after: await load(after) }
const { migrate } = await import(`${after}/outbox/migrate.js`)
const base = process.env.DATABASE_URL
const admin = postgres(base, { max: 1, onnotice: () => {} })
const name = `truncate_barrier_${process.pid}`
await admin.unsafe(`create database ${name}`)
const url = base.replace(/\/[^/]*$/, `/${name}`)
const sql = postgres(url, { max: 1, onnotice: () => {} })
const holder = postgres(url, { max: 1, onnotice: () => {} })
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
try {
  await migrate({ sql, ordering: 'entity' })
  const order = { ordering: 'entity', onDead: 'continue' }
  const queries = Object.fromEntries(Object.entries(builds).map(([key, b]) => [key, b.claim.claimQueries(b.outbox.outboxTable('public', 'outbox'), order)]))
  const truncated = `insert into outbox (event_type, entity_type, entity_id, payload) values ('item.truncated', 'item', '', '{}') returning id`
  const fill = `insert into outbox (event_type, entity_type, entity_id, payload) select 'item.created', 'item', g::text, '{"n": 1}' from generate_series(1, 100000) g`
  const states = {
    none: async () => sql.unsafe(fill),
    last: async () => {
      await sql.unsafe(fill)
      await sql.unsafe(truncated)
    },
    held: async () => {
      const [{ id }] = await sql.unsafe(truncated)
      await sql.unsafe(fill)
      await holder.unsafe('begin')
      await holder.unsafe('select 1 from outbox where id = $1 for update', [id])
    },
  }
  for (const [state, setUp] of Object.entries(states)) {
    await sql.unsafe('truncate outbox')
    await setUp()
    await sql.unsafe('vacuum analyze outbox')
    const times = { before: [], after: [] }
    const taken = {}
    for (let i = 0; i < claims; i++) {
      for (const key of i % 2 === 0 ? ['before', 'after'] : ['after', 'before']) {
        const start = performance.now()
        const batch = await builds[key].claim.outboxClaimBatch(sql, queries[key], { batchSize: 250, maxBytes: 1e9, suspects: false, fromId: '0' })
        times[key].push(performance.now() - start)
        taken[key] = batch.events.length
        await sql.unsafe('rollback')
      }
    }
    if (state === 'held') await holder.unsafe('rollback')
    const [b, a] = [median(times.before), median(times.after)]
    console.log(`${state}: before ${b.toFixed(3)} ms (took ${taken.before}), after ${a.toFixed(3)} ms (took ${taken.after}); after ÷ before ${(a / b).toFixed(2)}`)
  }
} finally {
  await holder.end()
  await sql.end()
  await admin.unsafe(`drop database if exists ${name} with (force)`)
  await admin.end()
}
