// status --schemas on many tenants: outboxTenantsStatus's time, each run on a fresh connection (as the CLI's),
// so the server's caches of the tenants' relations are cold per run as they are for `outbox-poller status`.
// Usage: npm run build && DATABASE_URL=postgres://… node test/bench/tenant-status.mjs <pattern> [runs]
// (tenants made with e.g. `outbox-poller migrate --schemas 'tday_*' --partition-by day` over created schemas)
import postgres from 'postgres'
import { outboxTenantsStatus } from '../../dist/ops/tenant-status.js'

const pattern = process.argv[2] ?? 'tenant_*'
const runs = Number(process.argv[3] ?? 5)
const times = []
let totals
for (let i = 0; i < runs; i++) {
  const sql = postgres(process.env.DATABASE_URL, { max: 1, onnotice() {} })
  await sql`select 1`
  const started = performance.now()
  totals = (await outboxTenantsStatus(sql, [pattern], 'outbox')).totals
  times.push(performance.now() - started)
  await sql.end()
}
times.sort((a, b) => a - b)
console.log(`${pattern}: ${totals.tenants} tenants ${JSON.stringify(totals.layouts)}; ms ${times.map((t) => t.toFixed(0)).join(' ')}, median ${times[Math.floor(runs / 2)].toFixed(0)}`)
