import { describe, expect, it } from 'vitest'
import { RetryLaterError } from '../../src/errors.js'
import { silentLogger } from '../../src/log.js'
import { AnnounceWindow } from '../../src/poller/announce-window.js'
import { ClaimedEvent } from '../../src/poller/claimed-event.js'
import { BatchDispatch } from '../../src/poller/dispatch-batch.js'
import { type BatchHandler, HandlerRegistry, withBatchForm } from '../../src/poller/handler-registry.js'
import type { OutboxEvent } from '../../src/types.js'

function rows(types: string[]): ClaimedEvent[] {
  return types.map(
    (event_type, i) =>
      new ClaimedEvent({ id: String(i + 1), event_id: `00000000-0000-4000-8000-${String(i + 1).padStart(12, '0')}`, event_type, entity_type: event_type.split('.')[0]!, entity_id: String(i + 1), payload: '{}', metadata: null, created_at: new Date(), attempt: 1 }, 'public'),
  )
}

const ids = (events: readonly OutboxEvent[]) => events.map((event) => event.id)

/** A batch handler recording its calls; `answer` gives each event's result. */
function recording(answer: (event: OutboxEvent) => Error | undefined = () => undefined) {
  const calls: OutboxEvent[][] = []
  const handler: BatchHandler = async (events) => {
    calls.push([...events])
    return events.map(answer)
  }
  return { calls, handler: withBatchForm(() => {}, handler) }
}

function dispatch(registry: HandlerRegistry, handlerTimeoutMs = 5_000) {
  return new BatchDispatch(registry, { concurrency: 4, handlerTimeoutMs, log: silentLogger })
}

describe('the batch path of the dispatch', () => {
  it("a batch handler gets all of a batch's matching events in one call, and its answers settle each event alone", async () => {
    const sink = recording((event) => (event.id === '3' ? new Error('rejected by the broker') : event.id === '4' ? new RetryLaterError('broker down') : undefined))
    const registry = new HandlerRegistry({ 'item.*': sink.handler })
    const batch = rows(['item.created', 'item.created', 'item.created', 'item.updated', 'widget.created', 'item.created'])
    const outcome = await dispatch(registry).run(batch)
    expect(sink.calls.map(ids)).toEqual([['1', '2', '3', '4', '6']])
    expect(ids(outcome.succeeded).sort()).toEqual(['1', '2', '6'])
    expect(outcome.failed.map(({ event, error }) => [event.id, (error as Error).message])).toEqual([['3', 'rejected by the broker']])
    expect(ids(outcome.deferred)).toEqual(['4'])
    expect(ids(outcome.unmatched)).toEqual(['5'])
    expect(outcome.latencyMs).toHaveLength(5)
  })

  it('a batch handler that rejects fails every event it was given, and no other', async () => {
    const failing = withBatchForm(() => {}, async () => {
      throw new Error('the whole call failed')
    })
    const other = recording()
    const registry = new HandlerRegistry({ 'item.*': failing, '*': other.handler })
    const outcome = await dispatch(registry).run(rows(['item.created', 'widget.created', 'item.created']))
    expect(other.calls.map(ids)).toEqual([['1', '2', '3']])
    expect(outcome.failed.map(({ event }) => event.id).sort()).toEqual(['1', '3'])
    expect(ids(outcome.succeeded)).toEqual(['2'])
  })

  it('an event with per-event and batch handlers succeeds only when all did; a rejection outweighs a deferral', async () => {
    const sink = recording((event) => (event.id === '2' ? new RetryLaterError('broker down') : event.id === '3' ? new Error('rejected by the broker') : undefined))
    const handled: string[] = []
    const perEvent = (event: OutboxEvent) => {
      handled.push(event.id)
      if (event.id === '1') throw new Error('handler failed')
      if (event.id === '3') throw new RetryLaterError('handler says later')
    }
    const registry = new HandlerRegistry({ 'item.*': sink.handler })
    registry.add('item.*', perEvent)
    const outcome = await dispatch(registry).run(rows(['item.created', 'item.created', 'item.created', 'item.created']))
    expect(handled.sort()).toEqual(['1', '2', '3', '4'])
    expect(sink.calls.map(ids)).toEqual([['1', '2', '3', '4']])
    expect(ids(outcome.succeeded)).toEqual(['4'])
    expect(ids(outcome.deferred)).toEqual(['2'])
    expect(outcome.failed.map(({ event, error }) => [event.id, (error as Error).message]).sort()).toEqual([['1', 'handler failed'], ['3', 'rejected by the broker']])
  })

  it('a batch handler that does not answer within the handler timeout fails its events, and its signal aborts', async () => {
    let signal: AbortSignal | undefined
    const stuck = withBatchForm(() => {}, (_events, given) => {
      signal = given
      return new Promise(() => {})
    })
    const outcome = await dispatch(new HandlerRegistry({ '*': stuck }), 50).run(rows(['a.b', 'a.b']))
    expect(outcome.failed.map(({ error }) => (error as Error).message)).toEqual(['handler timed out after 50 ms', 'handler timed out after 50 ms'])
    expect(signal?.aborted).toBe(true)
  })

  it("stopping the batch counts a batch handler's events as running and ends its call", async () => {
    let started!: () => void
    const calling = new Promise<void>((resolve) => (started = resolve))
    const stuck = withBatchForm(() => {}, () => {
      started()
      return new Promise(() => {})
    })
    const batchDispatch = dispatch(new HandlerRegistry({ '*': stuck }))
    const running = batchDispatch.run(rows(['a.b', 'a.b', 'a.b']))
    await calling
    const reason = new Error('the batch connection closed')
    expect(batchDispatch.abortBatch(reason).sort()).toEqual(['1', '2', '3'])
    expect((await running).stopped).toBe(reason)
  })

  it('under announcements a batch handler gets only events already announced, window by window', async () => {
    const announced = new Set<string>()
    const window = new AnnounceWindow(async (batchIds) => {
      await new Promise((resolve) => setImmediate(resolve))
      for (const id of batchIds) announced.add(id)
    }, 2)
    const handedOver: string[] = []
    const sink = withBatchForm(() => {}, async (events) => {
      for (const event of events) {
        expect(announced.has(event.id)).toBe(true)
        handedOver.push(event.id)
      }
      return events.map(() => undefined)
    })
    const batch = rows(Array.from({ length: 10 }, () => 'a.b'))
    const announcements = window.open(batch, (error) => {
      throw error
    })
    const outcome = await dispatch(new HandlerRegistry({ '*': sink })).run(batch, undefined, announcements)
    window.close(announcements)
    expect(handedOver).toEqual(ids(batch))
    expect(ids(outcome.succeeded).sort((a, b) => Number(a) - Number(b))).toEqual(ids(batch))
  })
})
