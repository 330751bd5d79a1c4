// The claim alone under --ordering entity and group, alternated on the same outbox: the part of a batch the
// ordering changes, timed where the drain's rates swing with the machine's load.
// usage: npm run build && DATABASE_URL=… node test/bench/group-claim.mjs [repetitions=300] [events=100000]
// A scratch schema holds `events` pending events over events ÷ 50 entities; each claim (batch 250) runs in a
// transaction that is rolled back, so every claim sees the same outbox. "group = entity": every entity its own
// group (the second probe alone); "5 per group": five entities per group (fewer heads per id range too).
import postgres from 'postgres'
import { claimQueries, outboxClaimBatch } from '../../dist/poller/claim.js'
import { migrate } from '../../dist/outbox/migrate.js'
import { outboxTable } from '../../dist/outbox/outbox-table.js'
import { openScratchDatabase } from '../../dist/tools/scratch-database.js'

const repetitions = Number(process.argv[2] ?? 300)
const events = Number(process.argv[3] ?? 100_000)
const scratch = await openScratchDatabase('groupclaim', process.env.DATABASE_URL)
const sql = postgres(scratch.url, { max: 1, onnotice: () => {} })
const outbox = outboxTable(scratch.schema, 'outbox')
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
try {
  await migrate({ sql, schema: scratch.schema, ordering: 'group' })
  for (const [shape, perGroup] of [['group = entity', 1], ['5 per group', 5]]) {
    await sql.unsafe(`truncate ${outbox.qualified}`)
    await sql.unsafe(`insert into ${outbox.qualified} (event_type, entity_type, entity_id, group_key, payload)
                      select 'issue.created', 'issue', (n % ${events / 50})::text, ((n % ${events / 50}) / ${perGroup})::text, '{}' from generate_series(1, $1::int) n`, [events])
    await sql.unsafe(`analyze ${outbox.qualified}`)
    const times = { none: [], entity: [], group: [] }
    for (let i = 0; i < repetitions; i++) {
      for (const ordering of Object.keys(times)) {
        const queries = claimQueries(outbox, { ordering, onDead: 'continue' })
        const started = performance.now()
        const batch = await outboxClaimBatch(sql, queries, { batchSize: 250, maxBytes: 64 * 1024 * 1024, suspects: false, fromId: '0' })
        times[ordering].push(performance.now() - started)
        await sql.unsafe('rollback')
        if (batch.events.length !== 250) throw new Error(`${ordering} claimed ${batch.events.length}`)
      }
    }
    const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]))
    console.log(`${shape}: claim of 250, median ms: unordered ${m.none.toFixed(2)}, entity ${m.entity.toFixed(2)}, group ${m.group.toFixed(2)}; group ÷ entity ${(m.group / m.entity).toFixed(2)}`)
  }
} finally {
  await sql.end()
  await scratch.close()
}
