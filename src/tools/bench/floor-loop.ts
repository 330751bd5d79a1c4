/**
 * The drain floor as its own process: the bare loop of the shared floors (BEGIN; SELECT … ORDER BY id LIMIT n
 * FOR UPDATE SKIP LOCKED; UPDATE … SET processed_at = now() WHERE id = ANY(…); COMMIT) on the minimal table
 * (see floor-table.ts). It imports postgres.js and nothing else, so its peak RSS is the memory floor of a
 * worker. Started by `bench` like bench-worker.ts (task as JSON in argv[2], the same IPC messages).
 */
import { readFileSync } from 'node:fs'
import postgres from 'postgres'

interface FloorTask {
  url: string
  /** The schema holding the minimal table bare_outbox. */
  schema: string
  batchSize: number
}

const task = JSON.parse(process.argv[2]!) as FloorTask
const batchMs: number[] = []
const sql = postgres(task.url, { max: 1, onnotice: () => {} })
const table = sql(`${task.schema}.bare_outbox`)
await sql`select 1`
let releaseGo!: () => void
const go = new Promise<void>((resolve) => (releaseGo = resolve))
const loop = (async () => {
  await go
  for (;;) {
    const started = performance.now()
    const n = await sql.begin(async (tx) => {
      const rows = await tx`select id, event_id, event_type, entity_type, entity_id, payload, created_at
        from ${table} where processed_at is null order by id limit ${task.batchSize} for update skip locked`
      if (rows.length) await tx`update ${table} set processed_at = now() where id = any(${rows.map((r) => r.id)})`
      return rows.length
    })
    if (n === 0) break
    batchMs.push(performance.now() - started)
  }
})()

/** Peak resident set (VmHWM) of this process, MB. */
function peakRssMb(): number {
  return Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? process.resourceUsage().maxRSS) / 1024
}

process.on('message', async (message: { type: string }) => {
  if (message.type === 'go') releaseGo()
  else if (message.type === 'report') process.send!({ type: 'report', peakRssMb: peakRssMb(), batchMs, latencyMs: [], handledAt: [], handledIds: [], statements: 0, handled: 0, claims: 0, cpuMs: 0 })
  else if (message.type === 'stop') {
    await loop
    await sql.end()
    process.disconnect?.()
  }
})
process.send!({ type: 'ready' })
