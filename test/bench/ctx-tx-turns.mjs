// Handlers taking turns on ctx.tx(): 250 events, 32 at a time, each one SAVEPOINT, one INSERT, one RELEASE through
// the poller's SavepointTurns and EventContext, on one connection, with no claim or settlement around them.
// ms per event, 3 rounds. Run: npm run build && node test/bench/ctx-tx-turns.mjs $PWD/dist
import postgres from 'postgres'
const dist = process.argv[2]
const { EventContext, SavepointTurns } = await import(`${dist}/poller/handler-context.js`)
const sql = postgres(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres', { max: 1, onnotice: () => {} })
const log = { child: () => log, info() {}, warn() {}, error() {}, debug() {} }
let statements = 0
for (let r = 0; r < 3; r++) {
  const t = performance.now()
  await sql.begin(async (tx) => {
    await tx`create temp table if not exists fx (id uuid primary key)`
    const turns = new SavepointTurns(tx)
    const n = 250
    let next = 0
    const worker = async () => {
      while (next < n) {
        next++
        const ctx = new EventContext({ event_id: 'x', event_type: 'y' }, log, turns)
        const c = await ctx.tx()
        await c`insert into fx values (gen_random_uuid())`
        await ctx.finish(true)
      }
    }
    await Promise.all(Array.from({ length: 32 }, worker))
    if (turns.settle) await turns.settle()
  })
  console.log(dist, ((performance.now() - t) / 250).toFixed(3), 'ms/event')
}
await sql.end()
