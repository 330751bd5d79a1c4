// The claim with 1,000,000 paused events waiting, against the same claim on an outbox without them.
// Two outboxes in one scratch database, same fresh backlog; claims alternate between them (BEGIN, claim,
// ROLLBACK, so the backlog stays), and each round reports the median claim time of each and their ratio.
// Run: npm run build && DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node test/bench/paused-claim.mjs [paused] [rounds]
// EXPLAIN=1 also prints both claims' plans (scans and buffers) before the rounds.
import postgres from 'postgres'
import { migrate, outboxPause, outboxTable } from '../../dist/index.js'
import { claimQueries, outboxClaimBatch, outboxRollback } from '../../dist/poller/claim.js'
import { PausedTypes } from '../../dist/poller/paused-types.js'

const paused = Number(process.argv[2] ?? 1_000_000)
const rounds = Number(process.argv[3] ?? 5)
const fresh = 100_000
const claimsPerRound = 400
const base = process.env.DATABASE_URL
const admin = postgres(base, { max: 1, onnotice: () => {} })
const name = `paused_claim_${process.pid}`
await admin.unsafe(`create database ${name}`)
const url = base.replace(/\/[^/]*$/, `/${name}`)
const sql = postgres(url, { max: 1, onnotice: () => {} })
try {
  for (const table of ['with_paused', 'floor']) await migrate({ sql, table })
  const insert = (table, count, type, extra = '') =>
    sql.unsafe(`insert into ${table} (event_type, entity_type, entity_id, payload${extra ? ', retry_at' : ''})
                select '${type}', 'e', g::text, '{"n": 1}'${extra} from generate_series(1, ${count}) as g`)
  // the paused events come first, in id order: exactly where a claim scanning past them would pay
  await insert('with_paused', paused, 'billing.invoice.created')
  await insert('with_paused', fresh, 'issue.created')
  await insert('floor', fresh, 'issue.created')
  await outboxPause(sql, outboxTable('public', 'with_paused'), 'billing.*', 'bench')
  // the replicas park what they claim of the paused type; time it, as the one-off cost of a pause
  const parker = new PausedTypes(outboxTable('public', 'with_paused'), 2000)
  const parkQueries = claimQueries(outboxTable('public', 'with_paused'))
  const parkStart = performance.now()
  await parker.refresh(sql)
  for (;;) {
    const batch = await outboxClaimBatch(sql, parkQueries, { batchSize: 1000, maxBytes: 1e9, suspects: true })
    const { parked } = await parker.park(sql, batch.events)
    await sql.unsafe('commit')
    if (parked === 0) break
  }
  const parkSeconds = (performance.now() - parkStart) / 1000
  for (const table of ['with_paused', 'floor']) await sql.unsafe(`vacuum analyze ${table}`)
  const [{ n }] = await sql.unsafe(`select count(*)::int as n from with_paused where retry_at = 'infinity'`)
  console.log(`parked ${n} paused events in ${parkSeconds.toFixed(1)} s (batches of 1000, one connection)`)
  if (process.env.EXPLAIN) {
    for (const table of ['with_paused', 'floor']) {
      const claim = claimQueries(outboxTable('public', table)).claim
      const plan = await sql.unsafe(`explain (analyze, buffers, costs off) ${claim}`, [100, 1e9, true, '0'])
      console.log(table, plan.map((r) => r['QUERY PLAN']).filter((l) => /Scan|Buffers|Execution/.test(l)).join('\n'))
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  const queries = { with_paused: claimQueries(outboxTable('public', 'with_paused')), floor: claimQueries(outboxTable('public', 'floor')) }
  const ratios = []
  for (let round = 1; round <= rounds; round++) {
    const times = { with_paused: [], floor: [] }
    for (let i = 0; i < claimsPerRound; i++) {
      for (const table of i % 2 === 0 ? ['with_paused', 'floor'] : ['floor', 'with_paused']) {
        const start = performance.now()
        const batch = await outboxClaimBatch(sql, queries[table], { batchSize: 100, maxBytes: 1e9, suspects: true })
        times[table].push(performance.now() - start)
        if (batch.events.length !== 100 || batch.events.some((e) => e.event_type !== 'issue.created')) throw new Error('unexpected claim')
        await outboxRollback(sql)
      }
    }
    const ratio = median(times.with_paused) / median(times.floor)
    ratios.push(ratio)
    console.log(`round ${round}: claim of 100, median ${median(times.with_paused).toFixed(3)} ms with ${n} paused, ${median(times.floor).toFixed(3)} ms without: ratio ${ratio.toFixed(3)}`)
  }
  const sorted = [...ratios].sort((a, b) => a - b)
  console.log(`ratio median ${median(ratios).toFixed(3)} (spread ${sorted[0].toFixed(3)}–${sorted.at(-1).toFixed(3)}) over ${rounds} rounds of ${claimsPerRound} claims each`)
} finally {
  await sql.end()
  await admin.unsafe(`drop database ${name}`)
  await admin.end()
}
