// The height of the outbox's primary key through a drain, plain against partitioned by day (the partition's key is
// (id, created_at), 16 key bytes an entry against 8): N events inserted, then settled 250 at a time as the poller
// does (every settlement is a new row version and a new key entry), the height read with pageinspect's bt_metap
// each time it changes. Counted, not timed. Creates the pageinspect extension if missing (a superuser's right).
// Usage: npm run build && DATABASE_URL=postgres://… node test/bench/primary-key-height.mjs [events…]
import postgres from 'postgres'
import { migrate } from '../../dist/outbox/migrate.js'
import { samplePayloadSql } from '../../dist/tools/bench/drain-bench.js'

const sql = postgres(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test', { onnotice: () => {} })
const schema = 'bench_primary_key_height'
await sql.unsafe('create extension if not exists pageinspect')
try {
  for (const events of process.argv.slice(2).map(Number).concat(process.argv.length > 2 ? [] : [100000, 300000])) {
    for (const partitionBy of [undefined, 'day']) {
      await sql.unsafe(`drop schema if exists ${schema} cascade`)
      await migrate({ sql, schema, partitionBy })
      await sql.unsafe(`insert into ${schema}.outbox (event_type, entity_type, entity_id, payload) select 'issue.created', 'issue', n::text, ${samplePayloadSql} from generate_series(1, $1::int) n`, [events])
      // the primary key of the table holding the rows: the outbox, or today's partition
      const [{ key }] = await sql.unsafe(`select i.indexrelid::regclass::text as key from pg_index as i join pg_class as t on t.oid = i.indrelid
                                           where i.indisprimary and t.relnamespace = '${schema}'::regnamespace and t.relkind = 'r' and t.relname like 'outbox%'
                                           order by pg_relation_size(t.oid) desc limit 1`)
      const height = async () => (await sql.unsafe(`select (bt_metap($1)).level + 1 as height, pg_relation_size($1::regclass) / 8192 as pages`, [key]))[0]
      const seen = []
      let last
      for (let settled = 0; settled < events; settled += 250) {
        if (settled % 5000 === 0) {
          const now = await height()
          if (now.height !== last) seen.push(`${now.height} levels from ${settled.toLocaleString('en')} settled (${now.pages} pages)`)
          last = now.height
        }
        await sql.unsafe(`update ${schema}.outbox set processed_at = now() where id > $1 and id <= $1 + 250`, [settled])
      }
      console.log(`${events.toLocaleString('en')} events, ${partitionBy === undefined ? 'plain' : `partitioned by ${partitionBy}`}: ${seen.join('; ')}`)
    }
  }
} finally {
  await sql.unsafe(`drop schema if exists ${schema} cascade`)
  await sql.end()
}
