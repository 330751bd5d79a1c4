import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Command } from 'commander'
import pidusage from 'pidusage'
import postgres, { type Sql } from 'postgres'
import { percentile } from '../tools/bench/percentiles.js'
import { captureTable } from '../capture/capture.js'
import { integerOption } from '../poller/poller-options.js'
import { parseDuration } from '../duration.js'
import { migrate } from '../outbox/migrate.js'
import { type OutboxTable, outboxTable, pendingCondition, quoteIdent } from '../outbox/outbox-table.js'
import { openScratchDatabase } from '../tools/scratch-database.js'
import { checkedDatabaseUrl } from './database-url-option.js'
import { ExitCode } from '../supervisor/exit-codes.js'

const binPath = fileURLToPath(new URL('../../bin/outbox-poller.js', import.meta.url))
const handlerPath = fileURLToPath(new URL('../tools/demo-handler.js', import.meta.url))

interface DemoFlags {
  duration: string
  replicas: string
  rate: string
  burst: string
}

/** What the demo's replicas handled so far, read from their record files. */
class Records {
  readonly ids: string[] = []
  readonly latencies: number[] = []
  readonly #linesRead = new Map<string, number>()
  constructor(private readonly directory: string) {}

  /** Reads what was recorded since the last call; returns the latencies of those events. */
  async read(): Promise<number[]> {
    const fresh: number[] = []
    for (const file of await readdir(this.directory)) {
      const lines = (await readFile(join(this.directory, file), 'utf8')).split('\n').filter(Boolean)
      for (const line of lines.slice(this.#linesRead.get(file) ?? 0)) {
        const [id, latency] = line.split(' ')
        this.ids.push(id!)
        fresh.push(Number(latency))
      }
      this.#linesRead.set(file, lines.length)
    }
    for (const latency of fresh) this.latencies.push(latency)
    return fresh
  }
}

/**
 * A new user's first look: an outbox on an embedded PostgreSQL (or in a schema of DATABASE_URL), a captured
 * sample table, three supervised replicas, a writer with a steady rate and a burst; a live line, then a
 * summary that checks the guarantees: every change captured, every event handled exactly once.
 */
export async function demoCommand(command: Command): Promise<number> {
  const flags = command.opts<DemoFlags>()
  const durationMs = parseDuration(flags.duration, '--duration')
  const replicas = integerOption(flags.replicas, '--replicas', 3, 1, 16)
  const rate = integerOption(flags.rate, '--rate', 200, 1, 100_000)
  const burst = integerOption(flags.burst, '--burst', 20_000, 0, 1_000_000)
  const databaseUrl = checkedDatabaseUrl(command)
  const tty = process.stdout.isTTY === true

  console.log(databaseUrl ? 'demo: using DATABASE_URL, in a schema of its own (dropped at the end)' : 'demo: starting an embedded PostgreSQL (no DATABASE_URL set)…')
  const scratch = await openScratchDatabase('demo', databaseUrl)
  const directory = await mkdtemp(join(tmpdir(), 'outbox-demo-'))
  const sql = postgres(scratch.url, { max: 8, onnotice: () => {} })
  const outbox = outboxTable(scratch.schema, 'outbox')
  const orders = `${quoteIdent(scratch.schema)}.orders`
  const children: ChildProcess[] = []
  let interrupted = false
  const onInterrupt = () => (interrupted = true)
  process.on('SIGINT', onInterrupt)
  try {
    await migrate({ sql, schema: scratch.schema })
    await sql.unsafe(`create table ${orders} (id bigserial primary key, customer text not null, status text not null, total numeric(10,2) not null, updated_at timestamptz not null default now())`)
    await captureTable(sql, outbox, { table: orders, entity: 'order', ignoreColumns: ['updated_at'] })
    console.log(`demo: ${scratch.description}; outbox ${outbox.qualified}; capturing ${orders} as order.created|updated|deleted|truncated`)

    const workerPids = new Set<number>()
    for (let i = 0; i < replicas; i++) children.push(startReplica(scratch.url, scratch.schema, directory, workerPids))
    console.log(`demo: ${replicas} replicas started (each a supervisor and its worker); writing ${rate} changes/s, then a burst of ${burst.toLocaleString('en')} inserts`)

    const writer = new DemoWriter(sql, orders)
    const records = new Records(directory)
    const started = Date.now()
    let handledBefore = 0
    let lastTick = started
    let burstWritten = false
    while (!interrupted && Date.now() - started < durationMs) {
      const tickStart = Date.now()
      if (!burstWritten && burst > 0 && tickStart - started > durationMs / 3) {
        burstWritten = true
        await writer.burst(burst)
      }
      for (let slice = 0; slice < 10; slice++) {
        // half a second's worth of changes per tick, spread over it
        await Promise.all([writer.steady(rate / 20), new Promise((resolve) => setTimeout(resolve, 45))])
      }
      const recent = await records.read()
      const pending = await pendingCount(sql, outbox)
      const now = Date.now()
      const perSecond = ((records.ids.length - handledBefore) * 1000) / Math.max(now - lastTick, 1)
      handledBefore = records.ids.length
      lastTick = now
      const rss = await rssOf([...workerPids])
      const bar = burstWritten && pending > 0 ? ` burst ${progressBar(1 - pending / Math.max(burst, 1))}` : ''
      const line = `${((now - started) / 1000).toFixed(1).padStart(5)} s  ${Math.round(perSecond).toLocaleString('en').padStart(7)} events/s  pending ${String(pending).padStart(6)}  latency p50 ${recent.length ? percentile(recent, 50) : '-'} ms p99 ${recent.length ? percentile(recent, 99) : '-'} ms  RSS ${rss.map((mb) => `${mb} MB`).join(' / ')}${bar}`
      process.stdout.write(tty ? `\r\x1b[2K${line}` : `${line}\n`)
    }
    if (tty) process.stdout.write('\n')
    console.log(interrupted ? 'demo: interrupted; letting the replicas drain what is left…' : 'demo: writer stopped; letting the replicas drain what is left…')
    const drainedBy = Date.now() + 30_000
    while ((await pendingCount(sql, outbox)) > 0 && Date.now() < drainedBy) await new Promise((resolve) => setTimeout(resolve, 200))
    await stopReplicas(children)
    await records.read()
    return await summarize(sql, outbox, writer.changes, records)
  } finally {
    process.off('SIGINT', onInterrupt)
    await stopReplicas(children)
    await pidusage.clear()
    await sql.end()
    await scratch.close()
    await rm(directory, { recursive: true, force: true })
  }
}

function startReplica(url: string, schema: string, directory: string, workerPids: Set<number>): ChildProcess {
  const child = spawn(process.execPath, [binPath, 'run', '--schema', schema, '--handlers', handlerPath, '--log-level', 'info'], {
    env: { ...process.env, DATABASE_URL: url, OUTBOX_DEMO_DIR: directory },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let buffered = ''
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString()
    const lines = buffered.split('\n')
    buffered = lines.pop()!
    for (const line of lines) {
      const started = /"worker_pid":(\d+),"msg":"worker started"/.exec(line)
      if (started) workerPids.add(Number(started[1]))
    }
  })
  return child
}

async function stopReplicas(children: ChildProcess[]): Promise<void> {
  await Promise.all(
    children.splice(0).map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve()
          child.once('exit', () => resolve())
          child.kill('SIGTERM')
        }),
    ),
  )
}

/** Writes entity changes and counts the events they must produce. */
class DemoWriter {
  changes = 0
  readonly #live: string[] = []
  constructor(
    private readonly sql: Sql,
    private readonly table: string,
  ) {}

  /** Single-row statements, each its own transaction: inserts, updates and deletes. */
  async steady(count: number): Promise<void> {
    const writes: Promise<void>[] = []
    for (let i = 0; i < count; i++) {
      const roll = Math.random()
      if (roll < 0.5 || this.#live.length < 10) writes.push(this.#insert())
      else if (roll < 0.85) writes.push(this.#update())
      else writes.push(this.#delete())
    }
    await Promise.all(writes)
  }

  /** Inserts in 1,000-row statements. */
  async burst(count: number): Promise<void> {
    for (let done = 0; done < count; done += 1000) {
      const n = Math.min(1000, count - done)
      await this.sql.unsafe(`insert into ${this.table} (customer, status, total) select 'customer ' || n, 'new', n from generate_series(1, $1::int) n`, [n])
      this.changes += n
    }
  }

  async #insert(): Promise<void> {
    const [row] = await this.sql.unsafe(`insert into ${this.table} (customer, status, total) values ($1, 'new', $2) returning id::text`, [`customer ${Math.floor(Math.random() * 1000)}`, (Math.random() * 500).toFixed(2)])
    this.#live.push(row!.id)
    this.changes++
  }

  async #update(): Promise<void> {
    const id = this.#live[Math.floor(Math.random() * this.#live.length)]!
    const result = await this.sql.unsafe(`update ${this.table} set status = case status when 'new' then 'paid' when 'paid' then 'shipped' else 'new' end, total = total + 1, updated_at = now() where id = $1`, [id])
    this.changes += result.count
  }

  async #delete(): Promise<void> {
    const id = this.#live.splice(Math.floor(Math.random() * this.#live.length), 1)[0]!
    const result = await this.sql.unsafe(`delete from ${this.table} where id = $1`, [id])
    this.changes += result.count
  }
}

async function pendingCount(sql: Sql, outbox: OutboxTable): Promise<number> {
  const [row] = await sql.unsafe(`select count(*)::int as n from ${outbox.qualified} where ${pendingCondition}`)
  return row!.n as number
}

async function rssOf(pids: number[]): Promise<number[]> {
  const sizes: number[] = []
  for (const pid of pids) {
    try {
      sizes.push(Math.round((await pidusage(pid)).memory / 1048576))
    } catch {
      // a worker that was replaced
    }
  }
  return sizes
}

function progressBar(fraction: number): string {
  const width = 20
  const filled = Math.round(Math.max(0, Math.min(1, fraction)) * width)
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${Math.round(fraction * 100)}%`
}

/** Checks the guarantees the demo shows, from the database and the replicas' records. */
async function summarize(sql: Sql, outbox: OutboxTable, changes: number, records: Records): Promise<number> {
  const [counts] = await sql.unsafe(`select count(*)::int as events, count(*) filter (where processed_at is null)::int as pending, count(distinct event_id)::int as unique_ids from ${outbox.qualified}`)
  const handled = new Set(records.ids)
  const duplicates = records.ids.length - handled.size
  const checks: Array<[boolean, string]> = [
    [counts!.events === changes, `every change captured: ${changes.toLocaleString('en')} changes written, ${counts!.events.toLocaleString('en')} events in the outbox`],
    [counts!.pending === 0, `every event processed: ${counts!.pending} pending`],
    [handled.size === counts!.events && duplicates === 0, `each event handled exactly once: ${handled.size.toLocaleString('en')} distinct events handled, ${duplicates} handled twice`],
  ]
  console.log(`\nsummary: latency from commit to handler p50 ${percentile(records.latencies, 50)} ms, p99 ${percentile(records.latencies, 99)} ms over ${records.latencies.length.toLocaleString('en')} events`)
  for (const [ok, text] of checks) console.log(`  ${ok ? '✓' : '✗'} ${text}`)
  return checks.every(([ok]) => ok) ? ExitCode.ok : ExitCode.failure
}
