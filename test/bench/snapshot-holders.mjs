// Samples pg_stat_activity every 20 ms and prints each session seen holding a snapshot or transaction id
// whose age (as status computes it) passes AGE seconds, with every field that explains it.
// DATABASE_URL=… AGE=30 SECONDS=120 node test/bench/snapshot-holders.mjs
import postgres from 'postgres'

const sql = postgres(process.env.DATABASE_URL, { max: 1 })
const ageLimit = Number(process.env.AGE ?? 30)
const until = Date.now() + Number(process.env.SECONDS ?? 120) * 1000
const seen = new Map()
while (Date.now() < until) {
  const rows = await sql`
    select pid, datname, usename, application_name, backend_type, state, xact_start, query_start, backend_start,
           backend_xmin::text, backend_xid::text, left(query, 80) as query,
           extract(epoch from now() - coalesce(xact_start, query_start, backend_start))::float8 as age
      from pg_stat_activity
     where pid <> pg_backend_pid() and (backend_xmin is not null or backend_xid is not null)`
  for (const row of rows) {
    if (row.age < ageLimit) continue
    const key = `${row.pid}/${row.xact_start === null ? 'no xact' : 'xact'}`
    if (!seen.has(key)) console.log(JSON.stringify(row))
    seen.set(key, (seen.get(key) ?? 0) + 1)
  }
  await new Promise((resolve) => setTimeout(resolve, 20))
}
console.log('samples past the age, by session:', JSON.stringify(Object.fromEntries(seen)))
await sql.end()
