// Where a RabbitMQ batch's time goes, with no database: persistent mandatory publishes on a confirm channel.
// usage: BEAM=<pid of beam.smp> node test/bench/amqp-confirms.mjs batch|steady [size=250] [messages=20000] [headers=1] [keep=0]
//   batch:  publish `size` messages, wait for all their confirms, again (as a sink's batch does);
//   steady: keep `size` in flight (a confirm lets the next publish go).
// headers=1 sends the sink's properties and headers, 0 only the ceiling's (persistent, mandatory, message id);
// keep=1 leaves the queue and its messages for the next run (to measure a queue that holds messages).
// Prints messages/s, the broker's and this process's CPU per message, confirm frames, socket writes, and per batch
// the time from the last publish to the first and to the last confirm.
import { readFileSync } from 'node:fs'
import amqp from 'amqplib'

const [mode = 'batch', size = 250, messages = 20_000, headers = 1, keep = 0] = process.argv.slice(2).map((arg, i) => (i === 0 ? arg : Number(arg)))
const beamPid = Number(process.env.BEAM)
const beamCpuMs = () => {
  const fields = readFileSync(`/proc/${beamPid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 10 // clock ticks of 10 ms
}
const connection = await amqp.connect(process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672')
const channel = await connection.createConfirmChannel()
const exchange = 'amqp_confirms_probe'
const queue = `${exchange}_q`
await channel.assertExchange(exchange, 'topic', { durable: true })
await channel.assertQueue(queue, { durable: true })
await channel.bindQueue(queue, exchange, '#')
if (!keep) await channel.purgeQueue(queue)

const socket = connection.connection.stream
let writes = 0
const write = socket.write.bind(socket)
socket.write = (chunk, ...rest) => (writes++, write(chunk, ...rest))
let full = 0
let ackFrames = 0
channel.on('ack', () => ackFrames++)

let n = 0
function publish() {
  n++
  const body = Buffer.from(JSON.stringify({ event_id: crypto.randomUUID(), event_type: 'order.created', entity_type: 'order', entity_id: String(n), created_at: new Date().toISOString(), payload: { n, title: `event number ${n}`, tags: ['a', 'b', 'c'] } }))
  const options = { persistent: true, mandatory: true, messageId: crypto.randomUUID() }
  if (headers) Object.assign(options, { type: 'order.created', contentType: 'application/json', timestamp: Math.floor(Date.now() / 1000), appId: 'outbox-poller', headers: { event_type: 'order.created', entity_type: 'order', entity_id: String(n), created_at: new Date().toISOString() } })
  return new Promise((resolve, reject) => {
    if (!channel.publish(exchange, 'order.created', body, options, (error) => (error ? reject(error) : resolve(performance.now())))) full++
  })
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
const toFirst = []
const toLast = []
const batchMs = []
const beamBefore = beamCpuMs()
const cpuBefore = process.cpuUsage()
const started = performance.now()
if (mode === 'batch') {
  for (let sent = 0; sent < messages; sent += size) {
    const from = performance.now()
    const confirms = []
    for (let i = 0; i < size; i++) confirms.push(publish())
    const published = performance.now()
    const at = await Promise.all(confirms)
    toFirst.push(Math.min(...at) - published)
    toLast.push(Math.max(...at) - published)
    batchMs.push(Math.max(...at) - from)
  }
} else {
  await new Promise((resolve) => {
    let inFlight = 0
    let sent = 0
    const next = () => {
      while (inFlight < size && sent < messages) {
        inFlight++
        sent++
        publish().then(() => {
          inFlight--
          if (sent < messages) next()
          else if (inFlight === 0) resolve()
        })
      }
    }
    next()
  })
}
const elapsedMs = performance.now() - started
const cpu = process.cpuUsage(cpuBefore)
const round = (x, digits = 1) => Number(x.toFixed(digits))
console.log(JSON.stringify({
  mode, size, headers: Boolean(headers), messagesPerSecond: Math.round(messages / (elapsedMs / 1000)),
  brokerCores: round((beamCpuMs() - beamBefore) / elapsedMs, 2), brokerUsPerMessage: round(((beamCpuMs() - beamBefore) * 1000) / messages),
  clientUsPerMessage: round((cpu.user + cpu.system) / messages), messagesPerConfirmFrame: round(messages / ackFrames), socketWritesPerMessage: round(writes / messages, 2), publishReturnedFalse: full,
  ...(mode === 'batch' ? { batchMsMedian: round(median(batchMs)), lastPublishToFirstConfirmMs: round(median(toFirst)), lastPublishToLastConfirmMs: round(median(toLast)) } : {}),
}))
if (!keep) {
  await channel.deleteQueue(queue)
  await channel.deleteExchange(exchange)
}
await connection.close()
