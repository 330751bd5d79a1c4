// Where a partitioned outbox's drain loses against a plain one, without the poller: pgbench runs the poller's own
// claim (claimQueries) and settlement (markProcessed) in a loop (BEGIN with the batch's settings, claim, settle,
// COMMIT), on 100,000 pre-filled events, for each variant in turn, the order the same each round; paired ratios
// to the plain outbox of the same round. Variants: plain (a default migrate); plain with the partitioned layout's
// primary key (id, created_at); partitioned by day, claimed and settled through the parent; claimed on the current
// day's partition and settled through the parent (as the poller does while a backlog lasts, claim-partition.ts);
// claimed and settled on that partition; the settlement as a generic plan (`enable_seqscan = off`) instead of a
// custom one, on plain and partitioned.
// Usage: npm run build && DATABASE_URL=postgres://… node test/bench/partitioned-server-loop.mjs [rounds] [clients]
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { migrate, outboxTable } from '../../dist/index.js'
import { partitionRange, periodStart } from '../../dist/outbox/partition-upkeep.js'
import { claimQueries } from '../../dist/poller/claim.js'
import { settleQueries } from '../../dist/poller/settle.js'
import { samplePayloadSql } from '../../dist/tools/bench/drain-bench.js'
import { openScratchDatabase } from '../../dist/tools/scratch-database.js'

const rounds = Number(process.argv[2] ?? 10)
const clients = Number(process.argv[3] ?? 1)
const events = 100_000
const batch = 250
// the variants' schemas are named `<scratch schema>_…`, which the scratch database's close drops
const scratch = await openScratchDatabase('partitioned_loop', process.env.DATABASE_URL)
const sql = postgres(scratch.url, { max: 1, onnotice: () => {} })
const dir = mkdtempSync(join(tmpdir(), 'partitioned-loop-'))
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

/** A pgbench script: the claim of `claimed`, then the settlement of `settled` (both OutboxTable), `generic` or custom. */
function script(claimed, settled, generic, scanned = claimed) {
  const q = claimQueries(claimed, undefined, undefined, scanned)
  const claim = q.claim.replace(/\$1::int/g, `${batch}::int`).replace(/\$2::bigint/g, '100000000::bigint').replace(/\$3::boolean/g, 'true').replace(/\$4::bigint/g, ':floor::bigint')
  const settle = settleQueries(settled).markProcessed.replace('$1', ':ids').replace('$2', ':lo').replace('$3', ':hi')
  const text = `${q.begin.split('; ').join(';\n')};
select coalesce(array_agg(id), '{}')::text as ids, coalesce(min(id), 0) as floor, coalesce(min(created_at), now()) - interval '1 ms' as lo, coalesce(max(created_at), now()) + interval '1 ms' as hi from (${claim.replace(/\s+/g, ' ')}) as c \\gset
${q.afterClaim.split('; ').join(';\n')};
${generic ? 'set local enable_seqscan = off' : 'set local plan_cache_mode = force_custom_plan'};
${settle.replace(/\s+/g, ' ')};
commit;
`
  const file = join(dir, `${claimed.schema}-${scanned.table}-${settled.table}-${generic}.sql`)
  writeFileSync(file, text)
  return file
}

try {
  const plain = outboxTable(`${scratch.schema}_plain`, 'outbox')
  const plainPk = outboxTable(`${scratch.schema}_plain_pk`, 'outbox')
  const parted = outboxTable(`${scratch.schema}_parted`, 'outbox')
  await migrate({ sql, schema: plain.schema })
  await migrate({ sql, schema: plainPk.schema })
  await sql.unsafe(`alter table ${plainPk.qualified} drop constraint outbox_pkey, add primary key (id, created_at)`)
  await migrate({ sql, schema: parted.schema, partitionBy: 'day' })
  const [{ now }] = await sql`select now()`
  const partition = outboxTable(parted.schema, partitionRange(parted, 'day', periodStart(now, 'day')).name)
  const variants = [
    { name: 'plain', outbox: plain, file: script(plain, plain, false) },
    { name: 'plain, primary key (id, created_at)', outbox: plainPk, file: script(plainPk, plainPk, false) },
    { name: 'partitioned, claimed through the parent', outbox: parted, file: script(parted, parted, false) },
    { name: 'partitioned (as the poller)', outbox: parted, file: script(parted, parted, false, partition) },
    { name: 'partitioned, settled on the partition too', outbox: parted, file: script(parted, partition, false, partition) },
    { name: 'plain, generic settlement', outbox: plain, file: script(plain, plain, true) },
    { name: 'partitioned, generic settlement', outbox: parted, file: script(parted, parted, true) },
  ]
  const results = new Map(variants.map((v) => [v.name, []]))
  for (let round = 0; round < rounds; round++) {
    for (const v of variants) {
      const t = v.outbox.qualified
      await sql.unsafe(`truncate ${t}`)
      await sql.unsafe(`insert into ${t} (event_type, entity_type, entity_id, payload) select 'issue.created', 'issue', n::text, ${samplePayloadSql} from generate_series(1, $1::int) n`, [events])
      await sql.unsafe(`vacuum analyze ${t}`)
      await sql`checkpoint`
      execFileSync('pgbench', ['-n', '-M', 'prepared', '-D', 'floor=0', '-c', String(clients), '-j', String(clients), '-t', String(Math.ceil(events / batch / clients) + 2), '-f', v.file, scratch.url], { stdio: 'pipe' })
      const [{ left, seconds }] = await sql.unsafe(`select count(*) filter (where processed_at is null)::int as left, extract(epoch from max(processed_at) - min(processed_at))::float8 as seconds from ${t}`)
      if (left !== 0) throw new Error(`${v.name}: ${left} events left undrained`)
      results.get(v.name).push(events / seconds)
    }
  }
  const base = results.get('plain')
  console.log(`${rounds} rounds, ${clients} client(s), batch ${batch}, ${events.toLocaleString('en')} events; events/s median (range), ÷ plain of the same round median (range)`)
  for (const [variant, values] of results) {
    const ratios = values.map((value, i) => value / base[i])
    console.log(`${variant.padEnd(40)} ${Math.round(median(values)).toLocaleString('en').padStart(8)} (${Math.round(Math.min(...values))}–${Math.round(Math.max(...values))})  ${median(ratios).toFixed(3)} (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`)
  }
} finally {
  await sql.end()
  await scratch.close()
  rmSync(dir, { recursive: true, force: true })
}
