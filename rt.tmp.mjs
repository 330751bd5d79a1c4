import postgres from 'postgres'
const sql = postgres('postgres://postgres@127.0.0.1:5432/postgres', { max: 1, onnotice: () => {} })
await sql`create temp table if not exists fx (id uuid primary key)`
await sql`select 1`
const n = 250
async function timed(name, body) {
  const t = performance.now()
  await sql.begin(body)
  console.log(name, ((performance.now() - t) / n).toFixed(3), 'ms/event')
}
await timed('select 1 each (1 RTT)', async (tx) => { for (let i = 0; i < n; i++) await tx`select 1` })
await timed('sp+insert, release awaited (2 RTT)', async (tx) => { for (let i = 0; i < n; i++) { tx.unsafe('savepoint s').execute(); await tx`insert into fx values (gen_random_uuid())`; await tx.unsafe('release savepoint s') } })
await timed('release pipelined (1 RTT)', async (tx) => { let r; for (let i = 0; i < n; i++) { tx.unsafe('savepoint s').execute(); await tx`insert into fx values (gen_random_uuid())`; r = tx.unsafe('release savepoint s').execute() } await r })
await timed('insert only (1 RTT)', async (tx) => { for (let i = 0; i < n; i++) await tx`insert into fx values (gen_random_uuid())` })
await sql.end()
