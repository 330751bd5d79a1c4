// A worker's memory over a steady run: one supervised replica at --batch-size 1000 drains a captured table that
// a writer fills at a steady rate; the worker's VmRSS is sampled every 10 s. Prints the curve, then the median
// RSS of the second and the last minute (the first is warm-up), their ratio, and the worker's peak (VmHWM).
// Run: npm run build && DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node test/bench/steady-memory.mjs [minutes] [writes/s]
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { captureTable, migrate, outboxTable } from '../../dist/index.js'

const minutes = Number(process.argv[2] ?? 10)
const perSecond = Number(process.argv[3] ?? 2000)
const base = process.env.DATABASE_URL
const admin = postgres(base, { max: 1, onnotice: () => {} })
const name = `steady_memory_${process.pid}`
await admin.unsafe(`create database ${name}`)
const url = base.replace(/\/[^/]*$/, `/${name}`)
const sql = postgres(url, { max: 2, onnotice: () => {} })
const scratch = mkdtempSync(join(tmpdir(), 'steady-memory-'))
const handlers = join(scratch, 'noop.mjs')
writeFileSync(handlers, 'export default function noop() {}\n')

const status = (pid) => readFileSync(`/proc/${pid}/status`, 'utf8')
const megabytes = (text, field) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(text)?.[1] ?? NaN) / 1024
const children = (pid) => readdirSync(`/proc/${pid}/task`).flatMap((task) => readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean).map(Number))
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

let replica
try {
  await migrate({ sql })
  await sql`create table orders (id bigserial primary key, customer text not null, amount numeric not null, note text not null default repeat('x', 200))`
  await captureTable(sql, outboxTable('public', 'outbox'), { table: 'orders', entity: 'order' })
  replica = spawn(process.execPath, ['bin/outbox-poller.js', 'run', '--database-url', url, '--batch-size', '1000', '--handlers', handlers, '--log-level', 'warn'], { stdio: ['ignore', 'inherit', 'inherit'] })
  let worker
  for (let i = 0; i < 100 && worker === undefined; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    worker = children(replica.pid)[0]
  }
  if (worker === undefined) throw new Error('no worker process appeared')

  // the writer: a statement of perSecond / 20 rows every 50 ms
  let written = 0
  let writing = true
  const writer = (async () => {
    const rows = Math.max(1, Math.round(perSecond / 20))
    for (let next = performance.now(); writing; next += 50) {
      await sql`insert into orders (customer, amount) select 'c' || n, n from generate_series(1, ${rows}) n`
      written += rows
      const wait = next + 50 - performance.now()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    }
  })()

  const samples = []
  const started = performance.now()
  console.log('minute  worker RSS MB  pending')
  while (performance.now() - started < minutes * 60_000) {
    await new Promise((resolve) => setTimeout(resolve, 10_000))
    const [{ pending }] = await sql`select count(*)::int as pending from outbox where processed_at is null`
    const rss = megabytes(status(worker), 'VmRSS')
    samples.push({ minute: (performance.now() - started) / 60_000, rss })
    console.log(`${samples.at(-1).minute.toFixed(2).padStart(6)}  ${rss.toFixed(1).padStart(13)}  ${pending}`)
  }
  writing = false
  await writer
  const second = median(samples.filter((s) => s.minute > 1 && s.minute <= 2).map((s) => s.rss))
  const last = median(samples.filter((s) => s.minute > minutes - 1).map((s) => s.rss))
  console.log(`written ${written} rows; worker RSS median second minute ${second.toFixed(1)} MB, last minute ${last.toFixed(1)} MB, last ÷ second ${(last / second).toFixed(3)}; peak (VmHWM) ${megabytes(status(worker), 'VmHWM').toFixed(1)} MB`)
} finally {
  replica?.kill('SIGTERM')
  if (replica) await new Promise((resolve) => replica.once('exit', resolve))
  await sql.end()
  await admin.unsafe(`drop database ${name} with (force)`)
  await admin.end()
  rmSync(scratch, { recursive: true, force: true })
}
