import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Sql } from 'postgres'
import { parseSink, type SinkSpec } from '../../sinks/parse-sink.js'
import type { CeilingTask } from './ceiling-worker.js'
import { type DrainResult, drainBench } from './drain-bench.js'
import { takingTurns } from './taking-turns.js'
import { startBenchReceiver } from './webhook-receiver.js'

const ceilingWorkerPath = fileURLToPath(new URL('./ceiling-worker.js', import.meta.url))

/** `bench --sink webhook`: relay to a local receiver the bench starts. */
export const localWebhook = 'webhook'

export interface RelayResult {
  /** The sink's name (credentials masked), or the local receiver's. */
  sink: string
  /** One poller × batch 250, no-op handler, same run. */
  drain: DrainResult
  /** The broker's (or receiver's) own ceiling, same run: confirmed messages per second, no database. */
  ceilingPerSecond: number
  /** The same poller relaying every event to the sink, confirmed before processed (to Redis or RabbitMQ: two batches in flight). */
  relay: DrainResult
  /** The same relay one batch at a time (`--no-overlap`); undefined for a sink whose batches never overlap (NATS, a webhook: see Sink.overlaps). */
  oneBatchAtATime: DrainResult | undefined
  /** relay ÷ min(no-op drain, ceiling): the share of what the slower of the two allows. */
  ratio: number
  /**
   * 1 ÷ (1 ÷ drain + 1 ÷ ceiling): the most one poller can relay one batch at a time, when a batch's claim and
   * settlement and its publishes take turns (the batch commits only once confirmed, and the next claim follows the commit).
   */
  turnsPerSecond: number
  /** Two pollers relaying: while one waits for its confirms the other claims and settles. */
  twoPollers: DrainResult
}

/**
 * One sink's relay, between the two floors it is bounded by, measured one after the other: the no-op drain
 * (what the database and the poller allow), the broker's ceiling (what the broker allows, `events`
 * publishes in a process of their own), then the relay itself over `events` events, by one poller (to Redis or RabbitMQ:
 * with two batches in flight, then one at a time) and by two.
 */
export async function relayBench(sql: Sql, url: string, schema: string, sink: string, secret: string | undefined, events: number): Promise<RelayResult> {
  const receiver = sink === localWebhook ? await startBenchReceiver() : undefined
  try {
    const target = receiver?.url ?? sink
    const spec = parseSink(target, 'bench --sink')
    const name = receiver === undefined ? spec.name : `a local webhook receiver (node:http, 204, keep-alive)`
    const drain = await drainBench(sql, url, schema, 'poller', 1, 250, events)
    const ceilingPerSecond = await ceilingInChild({ spec, count: events })
    const relayTo = { sink: target, sinkSecret: secret ?? (receiver && 'outbox-poller bench'), label: `relay to ${name}` }
    const relay = await drainBench(sql, url, schema, 'poller', 1, 250, events, relayTo)
    const oneBatchAtATime = spec.kind !== 'redis' && spec.kind !== 'amqp' ? undefined : await drainBench(sql, url, schema, 'poller', 1, 250, events, { ...relayTo, overlap: false, label: `${relayTo.label}, one batch at a time` })
    const twoPollers = await drainBench(sql, url, schema, 'poller', 2, 250, events, relayTo)
    const turnsPerSecond = takingTurns(drain.eventsPerSecond, ceilingPerSecond)
    return { sink: name, drain, ceilingPerSecond, relay, ratio: relay.eventsPerSecond / Math.min(drain.eventsPerSecond, ceilingPerSecond), turnsPerSecond, oneBatchAtATime, twoPollers }
  } finally {
    await receiver?.close()
  }
}

/** The ceiling, measured in a child process, as the poller runs in one. */
function ceilingInChild(task: CeilingTask): Promise<number> {
  const child = fork(ceilingWorkerPath, [JSON.stringify(task satisfies { spec: SinkSpec; count: number })], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  return new Promise((resolve, reject) => {
    child.once('message', (message: { perSecond: number }) => resolve(message.perSecond))
    child.once('exit', (code) => reject(new Error(`the ceiling process exited with code ${code} before its result`)))
  })
}
