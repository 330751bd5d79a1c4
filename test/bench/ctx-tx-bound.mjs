// What bounds --tx-mode batch: 250 single-row inserts (a tagged, prepared statement each) into a logged table
// with a uuid primary key, as bench's ctx.tx handler writes, in one transaction on one postgres.js connection, 32 at a time (pipelined, as the batch's handlers send them) and one at a time (as
// handlers taking turns do), next to one INSERT … SELECT of the 250 rows; no poller. ms per 250, 5 rounds.
// Run: node test/bench/ctx-tx-bound.mjs
import postgres from 'postgres'
const sql = postgres(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres', { max: 1, prepare: true, onnotice: () => {} })
const table = sql(`ctx_tx_bound_${process.pid}`)
await sql`create table ${table} (id uuid primary key)`
const inserts = async (concurrency) => {
  const startedAt = performance.now()
  let next = 0
  const worker = async () => {
    while (next < 250) {
      next++
      await sql`insert into ${table} values (${crypto.randomUUID()})`
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return +(performance.now() - startedAt).toFixed(1)
}
for (let round = 0; round < 5; round++) {
  await sql.unsafe('begin')
  const pipelined = await inserts(32)
  const inSeries = await inserts(1)
  const startedAt = performance.now()
  await sql`insert into ${table} select gen_random_uuid() from generate_series(1, 250)`
  const oneStatement = +(performance.now() - startedAt).toFixed(1)
  await sql.unsafe('rollback')
  console.log(JSON.stringify({ pipelined, inSeries, oneStatement }))
}
await sql`drop table ${table}`
await sql.end()
