import { spawn, spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres, { type Sql } from 'postgres'
import { type CaptureMode, captureTable } from '../../capture/capture.js'
import { migrate } from '../../outbox/migrate.js'
import { outboxTable, quoteIdent } from '../../outbox/outbox-table.js'
import { startBenchProcesses } from './bench-processes.js'

/** Who writes: pgbench when the machine has it (the embedded server ships none), else the bench's own processes. */
export type CaptureWriters = 'pgbench' | 'bench writers'

export interface CaptureResult {
  /** The write and the capture mode, e.g. `single-row insert, by statement`. */
  name: string
  writers: CaptureWriters
  /** Statements (transactions) per second into the plain table, the floor's and ours: medians over the runs. */
  plainPerSecond: number
  floorPerSecond: number
  capturedPerSecond: number
  /** Captured ÷ plain, and captured ÷ the floor trigger: medians of the per-run ratios, with their range. */
  ratio: number
  vsFloor: number
  vsFloorRange: [number, number]
}

const rows = 10_000
const writers = 4

/** One write: its SQL for the bench's writers ($1 a random id) and for pgbench (:id), on the table `%t`. */
interface Write {
  name: string
  script: string[]
  /** ids for $1: anywhere, or a slice of its own per writer (so bulk writers never wait for each other's rows) */
  ids: 'any' | 'own slice'
}

// Bulk statements roll back: every table keeps its 10,000 rows, and the trigger has done all its work by then.
const writes: Write[] = [
  { name: 'single-row insert', script: [`insert into %t (name, amount) values ('item', 1)`], ids: 'any' },
  { name: 'single-row update', script: ['update %t set amount = amount + 1 where id = $1'], ids: 'any' },
  { name: '1,000-row insert', script: ['begin', `insert into %t (name, amount) select 'item', n from generate_series(1, 1000) n`, 'rollback'], ids: 'any' },
  { name: '1,000-row update', script: ['begin', 'update %t set amount = amount + 1 where id between $1 and $1 + 999', 'rollback'], ids: 'own slice' },
  { name: '1,000-row delete', script: ['begin', 'delete from %t where id between $1 and $1 + 999', 'rollback'], ids: 'own slice' },
]

/**
 * The floor: the cheapest trigger capture of the same payload shape (one PL/pgSQL row trigger inserting
 * `{"data": to_jsonb(NEW)}` into a minimal outbox), as in the project's yardstick. Never a design to ship.
 */
function floorCapture(schema: string, table: string): string {
  const s = quoteIdent(schema)
  return `
    create table ${s}.floor_outbox (id bigint generated always as identity primary key, event_id uuid not null default gen_random_uuid(),
      event_type text not null, entity_type text not null, entity_id text not null, payload jsonb not null, processed_at timestamptz,
      created_at timestamptz not null default now());
    create index on ${s}.floor_outbox (id) where processed_at is null;
    create function ${s}.floor_capture() returns trigger language plpgsql as $$
    begin
      insert into ${s}.floor_outbox (event_type, entity_type, entity_id, payload)
      values ('issue.' || lower(TG_OP), 'issue', NEW.id::text, jsonb_build_object('data', to_jsonb(NEW)));
      return null;
    end $$;
    create function ${s}.floor_capture_delete() returns trigger language plpgsql as $$
    begin
      insert into ${s}.floor_outbox (event_type, entity_type, entity_id, payload)
      values ('issue.delete', 'issue', OLD.id::text, jsonb_build_object('data', to_jsonb(OLD)));
      return null;
    end $$;
    create trigger floor_capture after insert or update on ${s}.${quoteIdent(table)} for each row execute function ${s}.floor_capture();
    create trigger floor_capture_delete after delete on ${s}.${quoteIdent(table)} for each row execute function ${s}.floor_capture_delete();`
}

/**
 * Writer throughput into four tables of one shape (a 200-byte text column, 10,000 rows): plain, captured by the
 * floor trigger, captured by row and captured by statement, into an outbox of their own with no poller. Every
 * write runs `runs` times, the four tables interleaved, `seconds` each; then single-row inserts on that outbox
 * empty and holding `pending` pending events.
 */
export async function captureBench(url: string, schema: string, seconds: number, runs: number, pending: number, say: (line: string) => void): Promise<CaptureResult[]> {
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  const outbox = outboxTable(schema, 'capture_outbox')
  const tables = { plain: 'capture_plain', floor: 'capture_floor', row: 'capture_by_row', statement: 'capture_by_statement' }
  const qualified = (table: string) => `${quoteIdent(schema)}.${quoteIdent(table)}`
  const runner: CaptureWriters = spawnSync('pgbench', ['--version']).status === 0 ? 'pgbench' : 'bench writers'
  const scratch = await mkdtemp(join(tmpdir(), 'outbox-capture-bench-'))
  try {
    await migrate({ sql, schema, table: 'capture_outbox' })
    for (const table of Object.values(tables)) {
      await sql.unsafe(`create table ${qualified(table)} (id bigserial primary key, name text not null, amount int not null,
        note text not null default repeat('x', 200), updated_at timestamptz not null default now())`)
      await sql.unsafe(`insert into ${qualified(table)} (name, amount) select 'item', n from generate_series(1, ${rows}) n`)
    }
    await sql.unsafe(floorCapture(schema, tables.floor))
    for (const mode of ['row', 'statement'] as CaptureMode[]) await captureTable(sql, outbox, { table: qualified(tables[mode]), entity: 'item', mode })
    say(`  writers: ${runner === 'pgbench' ? 'pgbench' : 'the bench\'s own postgres.js processes (no pgbench on this machine)'}, ${writers} at once, ${seconds} s a run, ${runs} runs, medians (range of the ratio)`)

    const rate = async (write: Write, table: string): Promise<number> => {
      // the outboxes start empty and the table fresh every run: only the write differs between tables
      await sql.unsafe(`truncate ${outbox.qualified}, ${qualified('floor_outbox')}`)
      await sql.unsafe(`vacuum analyze ${qualified(table)}`)
      const script = write.script.map((statement) => statement.replaceAll('%t', qualified(table)))
      return runner === 'pgbench' ? pgbench(url, scratch, script, write.ids, seconds) : ownWriters(url, script, write.ids, seconds)
    }
    const results: CaptureResult[] = []
    for (const write of writes) {
      const measured = { plain: [] as number[], floor: [] as number[], row: [] as number[], statement: [] as number[] }
      for (let run = 0; run < runs; run++) for (const kind of ['plain', 'floor', 'row', 'statement'] as const) measured[kind].push(await rate(write, tables[kind]))
      for (const mode of ['row', 'statement'] as const) {
        const vsFloor = measured[mode].map((value, i) => value / measured.floor[i]!)
        results.push({
          name: `${write.name}, by ${mode}`,
          writers: runner,
          plainPerSecond: median(measured.plain),
          floorPerSecond: median(measured.floor),
          capturedPerSecond: median(measured[mode]),
          ratio: median(measured[mode].map((value, i) => value / measured.plain[i]!)),
          vsFloor: median(vsFloor),
          vsFloorRange: [Math.min(...vsFloor), Math.max(...vsFloor)],
        })
        say(formatCapture(results.at(-1)!))
      }
    }
    results.push(await grownOutbox(sql, schema, tables.statement, pending, runs, (table) => rate(writes[0]!, table), runner))
    say(formatCapture(results.at(-1)!))
    return results
  } finally {
    await sql.unsafe(`drop table if exists ${Object.values(tables).map(qualified).join(', ')}, ${qualified('floor_outbox')}`)
    await sql.unsafe(`drop function if exists ${qualified('floor_capture')}(), ${qualified('floor_capture_delete')}()`)
    await sql.end()
    await rm(scratch, { recursive: true, force: true })
  }
}

/**
 * Single-row inserts into a table captured into the (emptied) bench outbox, and into one of the same shape captured
 * into a second outbox holding `pending` pending events, as when the pollers fall behind; interleaved, the ratio
 * of the two per run. Here "floor" is the empty outbox.
 */
async function grownOutbox(sql: Sql, schema: string, empty: string, pending: number, runs: number, rate: (table: string) => Promise<number>, runner: CaptureWriters): Promise<CaptureResult> {
  const backlog = outboxTable(schema, 'capture_backlog')
  const grown = 'capture_into_backlog'
  const qualified = (table: string) => `${quoteIdent(schema)}.${quoteIdent(table)}`
  await migrate({ sql, schema, table: 'capture_backlog' })
  await sql.unsafe(`create table ${qualified(grown)} (id bigserial primary key, name text not null, amount int not null,
    note text not null default repeat('x', 200), updated_at timestamptz not null default now())`)
  await sql.unsafe(`insert into ${qualified(grown)} (name, amount) select 'item', n from generate_series(1, ${rows}) n`)
  await captureTable(sql, backlog, { table: qualified(grown), entity: 'item', mode: 'statement' })
  await sql.unsafe(`insert into ${backlog.qualified} (event_type, entity_type, entity_id, payload)
    select 'item.created', 'item', g::text, jsonb_build_object('data', jsonb_build_object('id', g, 'name', 'item', 'note', repeat('x', 200))) from generate_series(1, ${pending}) g`)
  await sql.unsafe(`vacuum analyze ${backlog.qualified}`)
  try {
    const ratios: number[] = []
    const rates = { empty: [] as number[], grown: [] as number[] }
    for (let run = 0; run < runs; run++) {
      rates.empty.push(await rate(empty))
      rates.grown.push(await rate(grown))
      ratios.push(rates.grown.at(-1)! / rates.empty.at(-1)!)
    }
    return {
      name: `single-row insert, ${pending.toLocaleString('en')} pending events, by statement`,
      writers: runner,
      plainPerSecond: median(rates.empty),
      floorPerSecond: median(rates.empty),
      capturedPerSecond: median(rates.grown),
      ratio: median(ratios),
      vsFloor: median(ratios),
      vsFloorRange: [Math.min(...ratios), Math.max(...ratios)],
    }
  } finally {
    await sql.unsafe(`drop table ${qualified(grown)}, ${backlog.qualified}`)
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

function idRange(ids: Write['ids'], writer: number): [number, number] {
  if (ids === 'any') return [1, rows]
  const slice = rows / writers
  return [writer * slice + 1, writer * slice + slice - 999]
}

async function pgbench(url: string, directory: string, script: string[], ids: Write['ids'], seconds: number): Promise<number> {
  const file = join(directory, 'script.sql')
  const slice = rows / writers
  const id = ids === 'any' ? `\\set id random(1, ${rows})` : `\\set id (:client_id % ${writers}) * ${slice} + random(1, ${slice - 999})`
  await writeFile(file, `${id}\n${script.map((statement) => `${statement.replaceAll('$1', ':id')};`).join('\n')}\n`)
  const output = await new Promise<string>((resolve, reject) => {
    const child = spawn('pgbench', ['-n', '-c', String(writers), '-j', '2', '-T', String(seconds), '-f', file, url], { stdio: ['ignore', 'pipe', 'pipe'] })
    let text = ''
    child.stdout.on('data', (chunk) => (text += chunk))
    child.stderr.on('data', (chunk) => (text += chunk))
    child.on('error', reject)
    child.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`pgbench exited with ${code}: ${text.trim().split('\n').at(-1)}`))))
  })
  const tps = /tps = ([\d.]+)/.exec(output)
  if (!tps) throw new Error(`pgbench printed no tps: ${output.trim().split('\n').at(-1)}`)
  return Number(tps[1])
}

async function ownWriters(url: string, script: string[], ids: Write['ids'], seconds: number): Promise<number> {
  const processes = (await Promise.all(Array.from({ length: writers }, (_, writer) => {
    const [from, to] = idRange(ids, writer)
    return startBenchProcesses(1, { mode: 'writer', url, script, seconds, from, to })
  }))).flat()
  for (const process of processes) process.go()
  const reports = await Promise.all(processes.map((process) => process.report()))
  await Promise.all(processes.map((process) => process.stop()))
  return reports.reduce((sum, report) => sum + report.statements, 0) / seconds
}

function formatCapture(r: CaptureResult): string {
  const perSecond = (value: number) => Math.round(value).toLocaleString('en').padStart(7)
  const range = `(${r.vsFloorRange[0].toFixed(2)}–${r.vsFloorRange[1].toFixed(2)})`
  if (r.name.includes('pending events')) {
    return `  ${r.name.padEnd(58)} empty ${perSecond(r.plainPerSecond)}/s  grown ${perSecond(r.capturedPerSecond)}/s  ${r.vsFloor.toFixed(2)}× the empty outbox ${range}`
  }
  return `  ${r.name.padEnd(34)} plain ${perSecond(r.plainPerSecond)}/s  floor ${perSecond(r.floorPerSecond)}/s  ours ${perSecond(r.capturedPerSecond)}/s  ${r.vsFloor.toFixed(2)}× the floor ${range}  ${r.ratio.toFixed(2)}× plain`
}
