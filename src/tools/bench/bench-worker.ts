/**
 * A bench process: a poller, the bare baseline loop, or a writer. Started by `outbox-poller bench` with
 * its task as JSON in argv[2]; reports over IPC. Separate processes, as in production.
 */
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import postgres from 'postgres'
import { applicationName, connect } from '../../database/connect.js'
import { outboxTable, pendingCondition } from '../../outbox/outbox-table.js'
import { ConfigError, errorMessage } from '../../errors.js'
import { ExitCode } from '../../supervisor/exit-codes.js'
import { silentLogger } from '../../log.js'
import { createPoller } from '../../create-poller.js'
import type { Handler, OutboxEvent } from '../../types.js'

export type BenchTask =
  | { mode: 'poller'; url: string; listenUrl?: string; listen?: boolean; schema: string; batchSize: number; recordLatency?: boolean; recordIds?: boolean; ordering?: 'none' | 'entity' | 'group'; handler?: 'noop' | 'tx'; txMode?: 'event' | 'batch'; sink?: string; sinkSecret?: string; overlap?: boolean }
  | { mode: 'bare'; url: string; schema: string; batchSize: number }
  // the bench handler's ctx.tx() writes without the poller: `events` rows, `batchSize` a transaction, `inFlight` at once
  | { mode: 'writes'; url: string; schema: string; batchSize: number; events: number; inFlight: number }
  // one poller serving every schema matching `schemas`; latency recorded for the events outside `hot`
  | { mode: 'tenants'; url: string; schemas: string; hot: string[]; handlerMs: number; tenantConcurrency: number; batchSize: number }
  // script: one transaction's statements, run in a loop; $1 is a random id from `from` to `to`
  | { mode: 'writer'; url: string; script: string[]; seconds: number; from: number; to: number }

export interface BenchReport {
  type: 'report'
  /** Peak RSS of this process (MB). */
  peakRssMb: number
  /** Duration of each non-empty batch (ms). */
  batchMs: number[]
  /** Commit-to-handler latency of each event (ms), when recorded. */
  latencyMs: number[]
  /** When each of those events was handled (ms since the epoch), and its id, with recordIds. */
  handledAt: number[]
  handledIds: number[]
  /** Statements a writer completed. */
  statements: number
  /** Events handled so far (every mode that handles them). */
  handled: number
  /** Loop iterations so far: claims, empty ones too, and the safety probes of idle tenants (tenants mode). */
  claims: number
  /** CPU time of this process so far, user and system (ms). */
  cpuMs: number
}

type ParentMessage = { type: 'go' } | { type: 'report' } | { type: 'stop' }

const task = JSON.parse(process.argv[2]!) as BenchTask
const batchMs: number[] = []
const latencyMs: number[] = []
const handledAt: number[] = []
const handledIds: number[] = []
let statements = 0
let handled = 0
let claims = 0
const send = (message: object) => process.send!(message)

/** Peak resident set (VmHWM) of this process, MB. */
function peakRssMb(): number {
  return Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? process.resourceUsage().maxRSS) / 1024
}

async function runPoller(t: Extract<BenchTask, { mode: 'poller' }>): Promise<() => Promise<void>> {
  const record = (event: OutboxEvent) => {
    const now = Date.now()
    latencyMs.push(now - event.created_at.getTime())
    handled++
    if (t.recordIds) handledAt.push(now), handledIds.push(Number(event.id))
  }
  // one row per event through ctx.tx(): the cost of exactly-once effects in the batch transaction. A tagged
  // statement, as handlers write them: prepared on a direct connection, so statements can be pipelined
  // (postgres.js describes an unprepared statement with parameters first, alone on the connection)
  const writeEffect: Handler = async (event, ctx) => {
    const tx = await ctx.tx()
    await tx`insert into ${tx(t.schema)}.bench_effects (event_id) values (${event.event_id})`
  }
  const poller = createPoller({
    connectionString: t.url,
    listenUrl: t.listenUrl,
    listen: t.listen,
    schema: t.schema,
    batchSize: t.batchSize,
    ordering: t.ordering ?? 'none',
    txMode: t.txMode,
    overlap: t.overlap,
    handlers: t.recordLatency ? record : t.handler === 'tx' ? writeEffect : t.sink ? {} : () => {},
    afterBatch: (report) => void (report.claimed > 0 && batchMs.push(report.durationMs)),
  })
  // a relay: every event published to the sink and confirmed before it counts as processed
  // loaded only for a relay, as in a worker
  const sinkModules = t.sink ? await Promise.all([import('../../sinks/parse-sink.js'), import('../../sinks/create-sinks.js')]) : undefined
  const sinks = sinkModules && (await sinkModules[1].createSinkHandlers([sinkModules[0].parseSink(t.sink!, 'bench --sink')], { secret: t.sinkSecret, log: silentLogger }))
  if (sinks) sinkModules![1].registerSinks(poller, sinks)
  await poller.start()
  return async () => {
    await poller.stop()
    await sinks?.close()
  }
}

/** A multi-tenant poller whose handler takes `handlerMs`; the latency of the cold tenants' events only. */
async function runTenants(t: Extract<BenchTask, { mode: 'tenants' }>): Promise<() => Promise<void>> {
  const hot = new Set(t.hot)
  const poller = createPoller({
    connectionString: t.url,
    schemas: t.schemas,
    batchSize: t.batchSize,
    tenantConcurrency: t.tenantConcurrency,
    handlers: async (event: OutboxEvent) => {
      if (!hot.has(event.schema)) latencyMs.push(Date.now() - event.created_at.getTime())
      if (t.handlerMs > 0) await new Promise((resolve) => setTimeout(resolve, t.handlerMs))
      handled++
    },
    afterBatch: (report) => {
      claims++
      if (report.claimed > 0) batchMs.push(report.durationMs)
    },
  })
  await poller.start()
  return () => poller.stop()
}

/** The baseline: BEGIN; SELECT … FOR UPDATE SKIP LOCKED LIMIT n; UPDATE … WHERE id = ANY(…); COMMIT — four round trips. */
async function runBare(t: Extract<BenchTask, { mode: 'bare' }>, go: Promise<void>): Promise<() => Promise<void>> {
  const sql = postgres(t.url, { max: 1, onnotice: () => {} })
  const table = outboxTable(t.schema, 'outbox').qualified
  await sql`select 1`
  let stopped = false
  const loop = (async () => {
    await go
    while (!stopped) {
      const started = performance.now()
      await sql.unsafe('begin')
      const rows = await sql.unsafe(
        `select id, event_id, event_type, entity_type, entity_id, payload, processed_at, created_at from ${table}
          where ${pendingCondition} and retry_at is null order by id limit $1 for update skip locked`,
        [t.batchSize],
      )
      if (rows.length > 0) await sql.unsafe(`update ${table} set processed_at = now() where id = any($1::bigint[])`, [rows.map((row) => row.id)])
      await sql.unsafe('commit')
      if (rows.length === 0) break
      handled += rows.length
      batchMs.push(performance.now() - started)
    }
  })()
  return async () => {
    stopped = true
    await loop
    await sql.end()
  }
}

/**
 * The writes of `--tx-mode batch` alone, on a connection opened as the poller opens its batch connection: each
 * transaction a savepoint and `batchSize` inserts of the bench handler's statement, `inFlight` at a time (the
 * poller's `--concurrency`), then RELEASE and COMMIT. What postgres.js and the server allow those statements.
 */
async function runWrites(t: Extract<BenchTask, { mode: 'writes' }>, go: Promise<void>): Promise<() => Promise<void>> {
  const sql = connect(t.url, { applicationName: applicationName('bench writes'), direct: true })
  await sql`select 1`
  const done = (async () => {
    await go
    for (let written = 0; written < t.events; ) {
      const started = performance.now()
      const count = Math.min(t.batchSize, t.events - written)
      const opened = Promise.all([sql.unsafe('begin').execute(), sql.unsafe('savepoint outbox_batch').execute()])
      let next = 0
      const lane = async () => {
        while (next < count) {
          next++
          await sql`insert into ${sql(t.schema)}.bench_effects (event_id) values (${randomUUID()})`
        }
      }
      await Promise.all([opened, ...Array.from({ length: Math.min(t.inFlight, count) }, lane)])
      await Promise.all([sql.unsafe('release savepoint outbox_batch'), sql.unsafe('commit')])
      written += count
      handled += count
      batchMs.push(performance.now() - started)
    }
  })()
  return async () => {
    await done
    await sql.end()
  }
}

async function runWriter(t: Extract<BenchTask, { mode: 'writer' }>, go: Promise<void>): Promise<() => Promise<void>> {
  const sql = postgres(t.url, { max: 1, onnotice: () => {} }) // one connection: a script may BEGIN and ROLLBACK
  await sql`select 1`
  const done = (async () => {
    await go
    const until = performance.now() + t.seconds * 1000
    while (performance.now() < until) {
      const id = t.from + Math.floor(Math.random() * (t.to - t.from + 1))
      for (const statement of t.script) await sql.unsafe(statement, statement.includes('$1') ? [id] : [])
      statements++
    }
  })()
  return async () => {
    await done
    await sql.end()
  }
}

let releaseGo!: () => void
const go = new Promise<void>((resolve) => (releaseGo = resolve))
// a start that fails (a sink's exchange missing, a broker down) is one line above the bench's own, no stack trace
const stop = await (task.mode === 'poller' ? runPoller(task) : task.mode === 'tenants' ? runTenants(task) : task.mode === 'bare' ? runBare(task, go) : task.mode === 'writes' ? runWrites(task, go) : runWriter(task, go)).catch((error: unknown) => {
  console.error(`outbox-poller: bench ${task.mode}: ${errorMessage(error)}`)
  process.exit(error instanceof ConfigError ? ExitCode.usage : ExitCode.failure)
})
process.on('message', async (message: ParentMessage) => {
  if (message.type === 'go') releaseGo()
  else if (message.type === 'report') {
    if (task.mode === 'writer' || task.mode === 'writes') await stop()
    const cpu = process.cpuUsage()
    send({ type: 'report', peakRssMb: peakRssMb(), batchMs, latencyMs, handledAt, handledIds, statements, handled, claims, cpuMs: (cpu.user + cpu.system) / 1000 } satisfies BenchReport)
  } else if (message.type === 'stop') {
    if (task.mode !== 'writer' && task.mode !== 'writes') await stop()
    process.disconnect?.()
  }
})
send({ type: 'ready' })
