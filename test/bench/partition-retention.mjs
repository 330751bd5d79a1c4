// Retention of a large outbox: cleanup dropping a partition whose events are all processed, against the chunked
// DELETE of the same rows from a plain outbox (then VACUUM, as cleanup does as the owner). Time, WAL written
// (pg_current_wal_lsn before and after) and the outbox's total size after.
// Usage: npm run build && DATABASE_URL=postgres://… node test/bench/partition-retention.mjs [rows] [chunk size]
import postgres from 'postgres'
import { migrate, outboxCleanup, outboxTable } from '../../dist/index.js'
import { outboxDropDonePartitions } from '../../dist/ops/partition-retention.js'
import { createPartition, partitionRange, periodStart, withLockRetries } from '../../dist/outbox/partition-upkeep.js'

const rows = Number(process.argv[2] ?? 1_000_000)
const chunkSize = Number(process.argv[3] ?? 1000)
const day = 86_400_000
const admin = postgres(process.env.DATABASE_URL, { max: 1, onnotice: () => {} })
const name = `outbox_retention_bench_${process.pid}`
await admin.unsafe(`create database ${name}`)
const url = new URL(process.env.DATABASE_URL)
url.pathname = `/${name}`
const sql = postgres(url.toString(), { max: 2, onnotice: () => {} })
const payload = `jsonb_build_object('data', jsonb_build_object('id', g, 'title', 'Issue number ' || g, 'status', 'open', 'points', g % 13))`
const mb = (bytes) => `${(Number(bytes) / 1048576).toFixed(1)} MB`
try {
  await migrate({ sql, table: 'plain' })
  await migrate({ sql, table: 'parted', partitionBy: 'day' })
  const [{ now }] = await sql`select now()`
  const old = partitionRange(outboxTable('public', 'parted'), 'day', new Date(periodStart(now, 'day').getTime() - 10 * day))
  await withLockRetries(sql, { lockTimeoutMs: 1000, attempts: 3, pauseMs: 100 }, (tx) => createPartition(tx, outboxTable('public', 'parted'), old))
  const at = new Date(old.from.getTime() + 3_600_000)
  for (const table of ['plain', 'parted']) {
    await sql.unsafe(`insert into ${table} (event_type, entity_type, entity_id, payload, created_at, processed_at)
                      select 'issue.created', 'issue', g::text, ${payload}, $1, $1 from generate_series(1, $2::int) g`, [at, rows])
    // a day of live events beside them, which retention must keep
    await sql.unsafe(`insert into ${table} (event_type, entity_type, entity_id, payload) select 'issue.created', 'issue', g::text, ${payload} from generate_series(1, 10000) g`)
    await sql.unsafe(`vacuum analyze ${table}`)
  }
  await sql`checkpoint`
  const results = []
  for (const table of ['plain', 'parted']) {
    const outbox = outboxTable('public', table)
    const totalSize = `coalesce((select sum(pg_total_relation_size(relid)) from pg_partition_tree('${table}')), pg_total_relation_size('${table}'))::bigint`
    const [{ size: before }] = await sql.unsafe(`select ${totalSize} as size`)
    const [{ lsn: start }] = await sql`select pg_current_wal_lsn() as lsn`
    const started = performance.now()
    let removed
    if (table === 'parted') {
      const dropped = await outboxDropDonePartitions(sql, outbox, { processedBefore: new Date(now.getTime() - 7 * day), deadBefore: undefined })
      removed = dropped.dropped.map((d) => d.name).join(', ')
    } else {
      const deleted = await outboxCleanup(sql, outbox, { olderThanMs: 7 * day, chunkSize })
      await sql.unsafe(`vacuum ${table}`)
      removed = `${deleted.processed} rows`
    }
    const seconds = (performance.now() - started) / 1000
    const [{ wal }] = await sql`select pg_wal_lsn_diff(pg_current_wal_lsn(), ${start}::pg_lsn)::bigint as wal`
    const [{ size: after, left }] = await sql.unsafe(`select ${totalSize} as size, (select count(*) from ${table})::int as left`)
    results.push({ table, removed, seconds, wal: mb(wal), before: mb(before), after: mb(after), left })
    console.log(`${table === 'parted' ? 'drop partition ' : `chunked delete (${chunkSize}) + VACUUM`}: ${seconds.toFixed(2)} s, WAL ${mb(wal)}, total size ${mb(before)} -> ${mb(after)}, ${left} events left (${removed})`)
  }
} finally {
  await sql.end()
  await admin.unsafe(`drop database if exists ${name} with (force)`)
  await admin.end()
}
