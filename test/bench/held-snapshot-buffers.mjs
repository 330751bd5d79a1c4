// Under a held REPEATABLE READ snapshot: buffers the claim from the floor, the sweep (a claim from id 0) and the
// settlement touch as processed rows pile up as dead versions no VACUUM may remove. No timing: buffer counts.
// A poller-like loop: 5 single-row inserts, a claim from a floor that lags ~800 ids (as ClaimFloor's one second
// does at 500 rows/s), the settlement, commit.
// After each mark: ANALYZE (as autovacuum does), then the custom and the generic plan of each statement.
// Run: npm run build && node test/bench/held-snapshot-buffers.mjs $PWD/dist [marks, e.g. 10000,90000]   (DATABASE_URL,
// default the local server; a schema of its own, dropped at the end)
import postgres from 'postgres'
const dist = process.argv[2]
const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const { migrate } = await import(`${dist}/outbox/migrate.js`)
const { outboxTable } = await import(`${dist}/outbox/outbox-table.js`)
const { claimQueries } = await import(`${dist}/poller/claim.js`)
const { settleQueries } = await import(`${dist}/poller/settle.js`)
const schema = 'held_snapshot_buffers'
// the writers' commits do not wait for the disk: only buffer counts are read here
const sql = postgres(url, { max: 6, onnotice: () => {}, connection: { synchronous_commit: 'off' } })
await sql.unsafe(`drop schema if exists ${schema} cascade`)
await migrate({ sql, schema, ordering: 'group' }) // as the bench's scratch outbox
const outbox = outboxTable(schema, 'outbox')
const t = outbox.qualified
const claim = claimQueries(outbox).claim
const settle = settleQueries(outbox).markProcessed
const wide = () => [new Date(Date.now() - 3600e3), new Date(Date.now() + 3600e3)]
const holder = await sql.reserve()
await holder`begin isolation level repeatable read`
await holder`select 1`
const poller = await sql.reserve()
const insert = (n) => Promise.all(Array.from({ length: n }, () => sql.unsafe(`insert into ${t} (event_type, entity_type, entity_id, payload) values ('x', 'item', '1', '{}')`)))

/** Shared buffers of the statement (its top plan node) and the scans it chose, as a custom or a generic plan. */
async function buffers(statement, params, mode) {
  await poller.unsafe('begin')
  await poller.unsafe(`set local plan_cache_mode = ${mode}`)
  await poller.unsafe(`prepare measured as ${statement}`)
  const [plan] = (await poller.unsafe(`explain (analyze, buffers, format json) execute measured(${params.map((p) => (Array.isArray(p) ? `'{${p.join(',')}}'` : p instanceof Date ? `'${p.toISOString()}'` : `'${p}'`)).join(', ')})`))[0]['QUERY PLAN']
  await poller.unsafe('rollback')
  await poller.unsafe('deallocate measured')
  const scans = []
  const walk = (node) => {
    if (/Scan/.test(node['Node Type']) && node['Relation Name'] === 'outbox') scans.push(node['Index Name'] ?? node['Node Type'])
    for (const child of node.Plans ?? []) walk(child)
  }
  walk(plan.Plan)
  return `${plan.Plan['Shared Hit Blocks'] + plan.Plan['Shared Read Blocks']} (${[...new Set(scans)].join(', ').replaceAll('outbox_', '')})`
}

let floor = 0n
const lagging = []
let processed = 0
console.log('dead versions, plan: shared buffers (the outbox indexes scanned)')
for (const mark of (process.argv[3] ?? '10000,30000,60000,90000').split(",").map(Number)) {
  while (processed < mark) {
    await insert(5)
    await poller.unsafe('begin')
    const rows = await poller.unsafe(claim, [250, 1 << 24, true, floor.toString()], { prepare: true })
    const fresh = rows.find((row) => row.part === 'f')
    if (fresh !== undefined) {
      lagging.push(BigInt(fresh.id))
      if (lagging.length > 160) floor = lagging.shift()
    }
    if (rows.length > 0) await poller.unsafe(settle, [rows.map((row) => row.id), ...wide()], { prepare: true })
    await poller.unsafe('commit')
    processed += rows.length
  }
  await insert(5)
  const pendingIds = (await sql.unsafe(`select id::text from ${t} where processed_at is null order by id limit 5`)).map((row) => row.id)
  await sql.unsafe(`analyze ${t}`) // as autovacuum does, snapshot or not
  for (const mode of ['force_custom_plan', 'force_generic_plan']) {
    const fromFloor = await buffers(claim, [250, 1 << 24, true, floor.toString()], mode)
    const sweep = await buffers(claim, [250, 1 << 24, true, '0'], mode)
    const settled = await buffers(settle, [pendingIds, ...wide()], mode)
    console.log(`${String(processed).padStart(8)} ${mode.replace('force_', '').replace('_plan', '').padEnd(7)}  claim from floor ${fromFloor}  sweep ${sweep}  settle of 5 ${settled}`)
  }
}
await holder`rollback`
holder.release()
poller.release()
await sql.unsafe(`drop schema ${schema} cascade`)
await sql.end()
