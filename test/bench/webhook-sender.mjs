// The webhook sink's publishBatch (batches of 250) against the bench's local receiver (node:http, 204, keep-alive),
// beside a plain node:http client on 64 keep-alive connections and fetch with 250 requests at once; no database.
// Run: npm run build && node test/bench/webhook-sender.mjs $PWD/dist
import { Agent, request } from 'node:http'
const dist = process.argv[2]
const { startBenchReceiver } = await import(`${dist}/tools/bench/webhook-receiver.js`)
const { createSinkHandlers } = await import(`${dist}/sinks/create-sinks.js`)
const { parseSink } = await import(`${dist}/sinks/parse-sink.js`)
const { silentLogger } = await import(`${dist}/log.js`)
const receiver = await startBenchReceiver()
const total = 20000, batch = 250
const body = JSON.stringify({ event_id: '00000000-0000-0000-0000-000000000000', event_type: 'order.created', entity_type: 'order', entity_id: '1', created_at: new Date().toISOString(), payload: { orderId: 'ord_1', note: 'x'.repeat(100) } })
async function rate(name, sendBatch) {
  const t = performance.now()
  for (let i = 0; i < total; i += batch) await sendBatch(i)
  const r = total / ((performance.now() - t) / 1000)
  console.log(name.padEnd(50), Math.round(r), 'req/s')
  return r
}
const agent = new Agent({ keepAlive: true, maxSockets: 64 })
const post = () => new Promise((resolve, reject) => {
  const req = request(receiver.url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => { res.resume(); res.on('end', resolve) })
  req.on('error', reject); req.end(body)
})
const sinks = await createSinkHandlers([parseSink(receiver.url)], { secret: 'whsec_dGVzdA==', log: silentLogger })
const sink = sinks.sinks[0]
const events = Array.from({ length: batch }, (_, i) => ({ id: String(i), event_id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, event_type: 'order.created', entity_type: 'order', entity_id: String(i), payloadText: '{"data": {"id": 1, "note": "' + 'x'.repeat(100) + '"}}', metadata: null, created_at: new Date(), attempt: 1, processed_at: null }))
for (let round = 0; round < 2; round++) {
  await rate('node:http, keep-alive agent, 64 sockets', () => Promise.all(events.map(post)))
  await rate('fetch, 250 at once', () => Promise.all(events.map(() => fetch(receiver.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then((r) => r.body?.cancel()))))
  await rate('webhook sink publishBatch(250)', async () => { const r = await sink.publishBatch(events); if (r.some((e) => e)) throw r.find((e) => e) })
}
await sinks.close(); agent.destroy(); await receiver.close()
