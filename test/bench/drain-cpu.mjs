// CPU time per drained event, client and server, for the floor (the bare loop on the minimal table), the same
// loop on our table, and the poller: on a 2-core host that several replicas saturate, throughput is bounded by
// 2 cores ÷ (CPU per event), so the ratio of CPU per event bounds the ratio of events/s — whatever else the
// machine does, since only the drain's own processes are counted (/proc/<pid>/stat of the bench's children and
// of their backends, which are the only sessions in a database of the script's own).
// Run: npm run build && node test/bench/drain-cpu.mjs [events] [rounds]   (ADMIN_URL, default the local server;
// PARTITION_BY=day: the outbox partitioned)
import { readFileSync, readdirSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import postgres from 'postgres'

const events = Number(process.argv[2] ?? 60000)
const rounds = Number(process.argv[3] ?? 3)
const dist = new URL('../../dist/', import.meta.url).pathname
const { drainBench } = await import(`${dist}tools/bench/drain-bench.js`)
const { migrate } = await import(`${dist}outbox/migrate.js`)
const adminUrl = process.env.ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const database = `drain_cpu_${randomBytes(3).toString('hex')}`
const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
await admin.unsafe(`create database ${database}`)
const url = adminUrl.replace(/\/[^/?]*(\?|$)/, `/${database}$1`)
const sql = postgres(url, { max: 1, onnotice: () => {} })
const ticks = 100 // USER_HZ

/** utime + stime of a process, seconds (0 once it is gone). */
function cpuSeconds(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(fields[11]) + Number(fields[12])) / ticks
  } catch {
    return 0
  }
}
const children = () => readdirSync('/proc').filter((p) => /^\d+$/.test(p) && (() => { try { return readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ')[1] === String(process.pid) } catch { return false } })())
// client backends only: an autovacuum worker comes and goes between two reads, and its CPU would count at random
const backends = async () => (await sql`select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and backend_type = 'client backend'`).map((r) => r.pid)

/** The drain, with the CPU of the bench's processes and of their backends read when they are ready and when drained. */
async function measure(mode, processes, batch) {
  const read = async () => {
    const server = await backends()
    return { client: children().map(cpuSeconds).reduce((a, b) => a + b, 0), server: server.map(cpuSeconds).reduce((a, b) => a + b, 0) }
  }
  let before, after
  const result = await drainBench(sql, url, 'public', mode, processes, batch, events, { onReady: async () => void (before = await read()), onDrained: async () => void (after = await read()) })
  const us = (seconds) => (seconds / events) * 1e6
  const clientUs = us(after.client - before.client)
  const serverUs = us(after.server - before.server)
  return { eventsPerSecond: result.eventsPerSecond, clientUs, serverUs, cpuUsPerEvent: clientUs + serverUs }
}

try {
  await migrate({ sql, schema: 'public', ...(process.env.PARTITION_BY ? { partitionBy: process.env.PARTITION_BY } : {}) })
  // what one piece of the outbox costs: DRAIN_CPU_SQL runs after the migration (e.g. dropping an index)
  if (process.env.DRAIN_CPU_SQL) await sql.unsafe(process.env.DRAIN_CPU_SQL)
  const out = {}
  for (let round = 0; round < rounds; round++) {
    for (const [p, b] of [[1, 250], [3, 250]]) {
      const key = `${p}x${b}`
      out[key] ??= []
      const floor = await measure('floor', p, b)
      const sameTable = await measure('bare', p, b)
      const poller = await measure('poller', p, b)
      const us = (r) => [+r.clientUs.toFixed(1), +r.serverUs.toFixed(1)]
      // µs per event as [client, server]; ratios are the floor's ÷ ours (events/s ours ÷ the floor's)
      out[key].push({ eps: [floor, sameTable, poller].map((r) => Math.round(r.eventsPerSecond)), floorUs: us(floor), sameTableUs: us(sameTable), pollerUs: us(poller), epsRatio: +(poller.eventsPerSecond / floor.eventsPerSecond).toFixed(3), cpuRatio: +(floor.cpuUsPerEvent / poller.cpuUsPerEvent).toFixed(3), sameTableCpuRatio: +(floor.cpuUsPerEvent / sameTable.cpuUsPerEvent).toFixed(3) })
      console.log(key, JSON.stringify(out[key].at(-1)))
    }
  }
  console.log(JSON.stringify(out))
} finally {
  await sql.end()
  await admin.unsafe(`drop database ${database} with (force)`)
  await admin.end()
}
