import postgres, { type Sql } from 'postgres'
import { migrate } from '../../outbox/migrate.js'
import { outboxTable, pendingCondition, quoteIdent, quoteLiteral } from '../../outbox/outbox-table.js'
import { type BenchProcessTask, type BenchProcess, startBenchProcesses } from './bench-processes.js'
import { percentile } from './percentiles.js'

export interface TenantsBenchOptions {
  tenants: number
  /** How many of them start with a backlog of `events` each. */
  hot: number
  events: number
  /** The measured window, while the hot backlog drains. */
  seconds: number
  handlerMs: number
  tenantConcurrency: number
  /** Measurements over the same tenants, each with a new replica. */
  rounds: number
}

export interface TenantsResult extends TenantsBenchOptions {
  /** While every outbox is empty: the poller's CPU (% of one core), and its claims and safety probes per second. */
  idleCpuPercent: number
  idleClaimsPerSecond: number
  /** Events handled per second over the window, hot and cold. */
  eventsPerSecond: number
  coldEvents: number
  coldP50Ms: number
  coldP99Ms: number
  coldMaxMs: number
  /** Hot events still pending when the last cold event was handled. */
  hotPendingAtEnd: number
}

/** Each cold tenant gets one event this often during the window. */
const coldEveryMs = 2_000
/** How long the idle cost is measured. */
const idleSeconds = 10

/**
 * Many tenants, one replica: `tenants` schemas of the scratch schema's name (`<schema>_t0001`, …), each with
 * its own outbox; one poller process serving them all (`schemas`). First the cost of the idle tenants; then
 * `hot` tenants get `events` pending events each while every other tenant receives one event every 2 s, for
 * `seconds`: the total rate and the cold events' commit-to-handler latency, the handler taking `handlerMs`.
 * `rounds` times over the same tenants.
 */
export async function tenantsBench(url: string, scratchSchema: string, options: TenantsBenchOptions, say: (line: string) => void): Promise<TenantsResult[]> {
  const sql = postgres(url, { max: 4, onnotice: () => {}, connection: { synchronous_commit: 'off' } as Record<string, string> })
  const schemas = Array.from({ length: options.tenants }, (_, i) => `${scratchSchema}_t${String(i + 1).padStart(4, '0')}`)
  const hot = schemas.slice(0, options.hot)
  const cold = schemas.slice(options.hot)
  try {
    const started = performance.now()
    for (const [i, schema] of schemas.entries()) {
      await sql.unsafe(`create schema ${quoteIdent(schema)}`)
      await migrate({ sql, schema })
      if ((i + 1) % 100 === 0) say(`  ${i + 1} tenant outboxes migrated (${Math.round((performance.now() - started) / 1000)} s)`)
    }
    const rounds: TenantsResult[] = []
    for (let round = 1; round <= options.rounds; round++) {
      // the rounds share the tenants (building them takes minutes); each round starts from empty outboxes and a new replica
      await sql.unsafe(`do $$ declare s name; begin for s in select nspname from pg_namespace where nspname like ${quoteLiteral(`${scratchSchema}\\_t%`)} loop execute format('delete from %I.outbox', s); end loop; end $$`)
      const result = await measureTenantsRound(sql, url, scratchSchema, hot, cold, options)
      say(`  round ${round}: ${formatTenantsRound(result, options.tenants)}`)
      rounds.push(result)
    }
    return rounds
  } finally {
    for (const schema of schemas) await sql.unsafe(`drop schema if exists ${quoteIdent(schema)} cascade`)
    await sql.end()
  }
}

/**
 * One round: a new replica over the tenants (emptied first by the caller), their idle cost, then the hot backlog
 * and the cold events. `start` starts the replica: another build's, to compare two builds over the same tenants
 * (test/bench/tenants-ab.mjs).
 */
export async function measureTenantsRound(sql: Sql, url: string, scratchSchema: string, hot: string[], cold: string[], options: TenantsBenchOptions, start: (count: number, task: BenchProcessTask) => Promise<BenchProcess[]> = startBenchProcesses): Promise<TenantsResult> {
  const [poller] = await start(1, { mode: 'tenants', url, schemas: `${scratchSchema}_t*`, hot, handlerMs: options.handlerMs, tenantConcurrency: options.tenantConcurrency, batchSize: 250 })
  try {
    // every tenant found empty and asleep before the idle cost is measured: the replica's first look at each
    // (a claim, the flag raised, one more claim) takes seconds on a loaded machine
    let idleFrom = await poller!.report()
    for (const until = performance.now() + 60_000; performance.now() < until; ) {
      await new Promise((resolve) => setTimeout(resolve, 1_000))
      const next = await poller!.report()
      const quiet = next.claims - idleFrom.claims <= 2
      idleFrom = next
      if (quiet) break
    }
    await new Promise((resolve) => setTimeout(resolve, idleSeconds * 1000))
    const idleTo = await poller!.report()
    const idleCpuPercent = ((idleTo.cpuMs - idleFrom.cpuMs) / (idleSeconds * 1000)) * 100
    const idleClaimsPerSecond = (idleTo.claims - idleFrom.claims) / idleSeconds
    for (const schema of hot) {
      await sql.unsafe(`insert into ${outboxTable(schema, 'outbox').qualified} (event_type, entity_type, entity_id, payload) select 'hot.created', 'hot', g::text, '{}' from generate_series(1, $1::int) g`, [options.events])
    }
    const windowFrom = { handled: (await poller!.report()).handled, at: performance.now() }
    const written = await writeCold(sql, cold, options.seconds)
    const windowTo = { handled: (await poller!.report()).handled, at: performance.now() }
    let report = await poller!.report()
    for (const deadline = performance.now() + 60_000; report.latencyMs.length < written && performance.now() < deadline; report = await poller!.report()) {
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    const latency = report.latencyMs
    return {
      ...options,
      idleCpuPercent,
      idleClaimsPerSecond,
      eventsPerSecond: (windowTo.handled - windowFrom.handled) / ((windowTo.at - windowFrom.at) / 1000),
      coldEvents: latency.length,
      coldP50Ms: percentile(latency, 50),
      coldP99Ms: percentile(latency, 99),
      coldMaxMs: latency.reduce((a, b) => Math.max(a, b), Number.NEGATIVE_INFINITY),
      hotPendingAtEnd: await pending(sql, hot),
    }
  } finally {
    await poller!.stop()
  }
}

/** A round's figures on one line. */
export function formatTenantsRound(r: TenantsResult, tenants: number): string {
  const ms = (value: number) => `${value.toFixed(1)} ms`
  return `idle ${r.idleCpuPercent.toFixed(1)} % of one core, ${r.idleClaimsPerSecond.toFixed(1)} claims and safety probes/s (${(r.idleClaimsPerSecond / tenants).toFixed(3)} per tenant per second); total ${Math.round(r.eventsPerSecond).toLocaleString('en')} events/s; ${r.coldEvents.toLocaleString('en')} cold events p50 ${ms(r.coldP50Ms)} p99 ${ms(r.coldP99Ms)} max ${ms(r.coldMaxMs)}; hot still pending ${r.hotPendingAtEnd.toLocaleString('en')}`
}

/** One event in each cold tenant every 2 s, spread evenly over the period, for `seconds`; returns how many. */
async function writeCold(sql: Sql, cold: readonly string[], seconds: number): Promise<number> {
  const tickMs = 20
  const perTick = (cold.length * tickMs) / coldEveryMs
  const started = performance.now()
  const writes: Promise<unknown>[] = []
  let next = 0
  let owed = 0
  for (let tick = 0; performance.now() - started < seconds * 1000; tick++) {
    const wait = started + tick * tickMs - performance.now()
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    for (owed += perTick; owed >= 1; owed--, next++) {
      const outbox = outboxTable(cold[next % cold.length]!, 'outbox')
      writes.push(sql.unsafe(`insert into ${outbox.qualified} (event_type, entity_type, entity_id, payload) values ('cold.created', 'cold', $1, '{}')`, [String(next)]).execute())
    }
  }
  await Promise.all(writes)
  return next
}

async function pending(sql: Sql, schemas: readonly string[]): Promise<number> {
  let total = 0
  for (const schema of schemas) total += (await sql.unsafe(`select count(*)::int as n from ${outboxTable(schema, 'outbox').qualified} where ${pendingCondition}`))[0]!.n as number
  return total
}
