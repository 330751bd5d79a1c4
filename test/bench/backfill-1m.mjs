// Backfill of 1,000,000 rows on a live table: rows/s of the backfill, and the throughput of 4 writers updating
// random rows of that table during it, against the same writers for the same time without it.
// Usage: npm run build && DATABASE_URL=postgres://… node test/bench/backfill-1m.mjs [rows] [chunk size]
import postgres from 'postgres'
import { backfill, captureTable, migrate, outboxTable } from '../../dist/index.js'

const rows = Number(process.argv[2] ?? 1_000_000)
const chunkSize = Number(process.argv[3] ?? 1000)
const admin = postgres(process.env.DATABASE_URL, { max: 1, onnotice: () => {} })
const name = `outbox_backfill_bench_${process.pid}`
await admin.unsafe(`create database ${name}`)
const url = new URL(process.env.DATABASE_URL)
url.pathname = `/${name}`
const sql = postgres(url.toString(), { max: 8, onnotice: () => {} })
try {
  await migrate({ sql })
  await sql`create table accounts (id bigint primary key, email text, plan text, balance numeric, updated_at timestamptz)`
  await sql`insert into accounts select n, n || '@example.com', 'free', n % 1000, now() from generate_series(1, ${rows}) n`
  await sql`vacuum analyze accounts`
  await captureTable(sql, outboxTable('public', 'outbox'), { table: 'accounts', entity: 'account' })
  const writers = async (stop) => {
    let count = 0
    await Promise.all([1, 2, 3, 4].map(async () => {
      while (!stop()) {
        await sql`update accounts set plan = 'pro', updated_at = now() where id = ${1 + Math.floor(Math.random() * rows)}`
        count++
      }
    }))
    return count
  }
  // the writers alone first, for as long as the backfill will take (measured after)
  const started = performance.now()
  let backfilling = true
  const during = writers(() => !backfilling)
  const result = await backfill(sql, 'accounts', { chunkSize })
  backfilling = false
  const seconds = (performance.now() - started) / 1000
  const writesDuring = await during
  const until = performance.now() + seconds * 1000
  const writesAlone = await writers(() => performance.now() > until)
  console.log(JSON.stringify({
    rows: result.progress.rows, chunkSize, seconds: Number(seconds.toFixed(1)), rowsPerSecond: Math.round(result.progress.rows / seconds),
    writerUpdatesPerSecondDuring: Math.round(writesDuring / seconds), writerUpdatesPerSecondAlone: Math.round(writesAlone / seconds),
  }))
} finally {
  await sql.end({ timeout: 5 })
  await admin.unsafe(`drop database if exists ${name} with (force)`)
  await admin.end({ timeout: 5 })
}
