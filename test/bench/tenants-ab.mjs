// `bench --tenants` of two builds over the same tenant schemas, the builds taking turns each round: building 500
// migrated outboxes takes most of a bench run, so they are built once, and kept for the next run with KEEP=1.
// usage: DATABASE_URL=… [HANDLER_MS=1] [TENANT_CONCURRENCY=1] [KEEP=1] node test/bench/tenants-ab.mjs <dist before> <dist after> [rounds=2] [tenants=500] [events=200000] [seconds=20]
// The after build migrates the tenants and measures; each build's own poller serves them (give the newer build second).
import { cpus, loadavg } from 'node:os'
import path from 'node:path'
import postgres from 'postgres'

const [before, after] = process.argv.slice(2, 4).map((dir) => path.resolve(dir))
const [rounds, tenants, events, seconds] = [2, 500, 200_000, 20].map((fallback, i) => Number(process.argv[4 + i] ?? fallback))
const options = { tenants, hot: 1, events, seconds, handlerMs: Number(process.env.HANDLER_MS ?? 1), tenantConcurrency: Number(process.env.TENANT_CONCURRENCY ?? 1), rounds }
const builds = {
  before: await import(`${before}/tools/bench/bench-processes.js`),
  after: await import(`${after}/tools/bench/bench-processes.js`),
}
const bench = await import(`${after}/tools/bench/tenants-bench.js`)
const { migrate } = await import(`${after}/outbox/migrate.js`)
const { quoteIdent, quoteLiteral } = await import(`${after}/outbox/outbox-table.js`)
const url = process.env.DATABASE_URL
const prefix = 'outbox_tenantsab'
const schemas = Array.from({ length: tenants }, (_, i) => `${prefix}_t${String(i + 1).padStart(4, '0')}`)
const sql = postgres(url, { max: 4, onnotice: () => {}, connection: { synchronous_commit: 'off' } })
const say = (line) => console.log(`${new Date().toISOString().slice(11, 19)} load ${loadavg().map((v) => v.toFixed(1)).join(' ')}: ${line}`)
try {
  // tenants past `tenants` (a larger earlier run) would be served too: dropped
  const existing = new Set((await sql`select nspname as name from pg_namespace where starts_with(nspname, ${`${prefix}_t`})`).map((row) => row.name))
  for (const name of existing) if (!schemas.includes(name)) await sql.unsafe(`drop schema ${quoteIdent(name)} cascade`)
  for (const [i, schema] of schemas.entries()) {
    if (!existing.has(schema)) await sql.unsafe(`create schema ${quoteIdent(schema)}`)
    if (!existing.has(schema)) await migrate({ sql, schema })
    if ((i + 1) % 100 === 0) say(`${i + 1} tenant outboxes ready`)
  }
  say(`${tenants} tenants, ${cpus().length} CPUs, handler ${options.handlerMs} ms, --tenant-concurrency ${options.tenantConcurrency}`)
  const results = {}
  for (let round = 1; round <= rounds; round++) {
    for (const [name, build] of round % 2 === 1 ? Object.entries(builds) : Object.entries(builds).reverse()) {
      await sql.unsafe(`do $$ declare s name; begin for s in select nspname from pg_namespace where nspname like ${quoteLiteral(`${prefix}\\_t%`)} loop execute format('delete from %I.outbox', s); end loop; end $$`)
      const result = await bench.measureTenantsRound(sql, url, prefix, schemas.slice(0, 1), schemas.slice(1), options, build.startBenchProcesses)
      ;(results[name] ??= []).push(result)
      say(`round ${round} ${name}: ${bench.formatTenantsRound(result, tenants)}`)
    }
  }
  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
  for (const [name, list] of Object.entries(results)) {
    const show = (key, digits = 0) => `${median(list.map((r) => r[key])).toFixed(digits)} (${list.map((r) => r[key].toFixed(digits)).join(', ')})`
    console.log(`${name}: events/s ${show('eventsPerSecond')}; cold p50 ${show('coldP50Ms')} p99 ${show('coldP99Ms')} ms; hot pending ${show('hotPendingAtEnd')}; idle CPU ${show('idleCpuPercent', 1)} %`)
  }
} finally {
  if (process.env.KEEP !== '1') for (const schema of schemas) await sql.unsafe(`drop schema if exists ${quoteIdent(schema)} cascade`)
  await sql.end()
}
