// What one console refresh costs the database on an outbox of 3,000,000 rows: the status query the console
// samples every 5 s, the dead list (first page), the live tail's look, next to a claim in the same run.
// Run: npm run build && DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node test/bench/console-refresh.mjs [runs]
import postgres from 'postgres'
import { migrate, outboxDeadEvents, outboxStatus, outboxTable } from '../../dist/index.js'
import { claimQueries, outboxClaimBatch, outboxRollback } from '../../dist/poller/claim.js'

const runs = Number(process.argv[2] ?? 30)
const base = process.env.DATABASE_URL
const admin = postgres(base, { max: 1, onnotice: () => {} })
const name = `console_refresh_${process.pid}`
await admin.unsafe(`create database ${name}`)
const sql = postgres(base.replace(/\/[^/]*$/, `/${name}`), { max: 1, onnotice: () => {} })
const outbox = outboxTable('public', 'outbox')
try {
  await migrate({ sql })
  // 2,900,000 processed over 7 days (180,000 of them in the last hour: 50 events/s), 99,000 pending, 1,000 dead
  await sql.unsafe(`insert into outbox (event_type, entity_type, entity_id, payload, created_at, processed_at)
    select 'type.' || (g % 20), 'e', g::text, '{"n": 1}', t - interval '50 ms', t
      from (select g, now() - (g * (7 * 86400.0 / 2720000)) * interval '1 second' - interval '1 hour' as t from generate_series(1, 2720000) as g) as s`)
  await sql.unsafe(`insert into outbox (event_type, entity_type, entity_id, payload, created_at, processed_at)
    select 'type.' || (g % 20), 'e', g::text, '{"n": 1}', t - interval '50 ms', t
      from (select g, now() - (g / 50.0) * interval '1 second' as t from generate_series(1, 180000) as g) as s`)
  await sql.unsafe(`insert into outbox (event_type, entity_type, entity_id, payload) select 'type.' || (g % 20), 'e', g::text, '{"n": 1}' from generate_series(1, 99000) as g`)
  await sql.unsafe(`insert into outbox (event_type, entity_type, entity_id, payload, dead_at, retry_at, attempts, last_error)
    select 'type.' || (g % 20), 'e', g::text, '{"n": 1}', now() - g * interval '1 second', now(), 10, 'Error: boom' from generate_series(1, 1000) as g`)
  await sql.unsafe('vacuum analyze outbox')
  const [{ rows }] = await sql.unsafe('select count(*)::int as rows from outbox')
  const queries = claimQueries(outbox)
  const timed = async (fn) => {
    const start = performance.now()
    await fn()
    return performance.now() - start
  }
  const parts = {
    'status, whole (the console: every 60 s)': () => outboxStatus(sql, outbox),
    'status without types (the console: every 5 s)': () => outboxStatus(sql, outbox, { types: false }),
    'dead list, first 100': () => outboxDeadEvents(sql, outbox, { limit: 100 }),
    'live tail look (30 s of processed rows)': () => sql`select id::text, event_type, entity_id, attempts, created_at, processed_at from outbox
       where processed_at > now() - interval '30 seconds' and processed_at <= now() order by processed_at, id limit 500`,
    'claim of 100 (for scale)': async () => {
      await outboxClaimBatch(sql, queries, { batchSize: 100, maxBytes: 1e9, suspects: true })
      await outboxRollback(sql)
    },
  }
  const times = Object.fromEntries(Object.keys(parts).map((key) => [key, []]))
  for (let run = 0; run < runs; run++) for (const [key, fn] of Object.entries(parts)) times[key].push(await timed(fn))
  console.log(`${rows} rows; ${runs} runs each, interleaved`)
  for (const [key, xs] of Object.entries(times)) {
    const sorted = [...xs].sort((a, b) => a - b)
    console.log(`${key}: median ${sorted[Math.floor(sorted.length / 2)].toFixed(1)} ms (spread ${sorted[0].toFixed(1)}–${sorted.at(-1).toFixed(1)})`)
  }
} finally {
  await sql.end()
  await admin.unsafe(`drop database ${name}`)
  await admin.end()
}
