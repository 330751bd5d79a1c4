import type { Sql } from 'postgres'
import { describe, expect, it } from 'vitest'
import { silentLogger } from '../../src/log.js'
import { ClaimedEvent } from '../../src/poller/claimed-event.js'
import { BatchDispatch, type SharedRoom } from '../../src/poller/dispatch-batch.js'
import { SavepointTurns } from '../../src/poller/handler-context.js'
import { HandlerSlots } from '../../src/poller/handler-slots.js'
import { HandlerRegistry } from '../../src/poller/handler-registry.js'
import type { OutboxEvent } from '../../src/types.js'

function rows(schema: string, n: number): ClaimedEvent[] {
  return Array.from({ length: n }, (_, i) => new ClaimedEvent({ id: String(i + 1), event_id: `00000000-0000-4000-8000-${String(i + 1).padStart(12, '0')}`, event_type: 'order.created', entity_type: 'order', entity_id: String(i + 1), payload: '{}', metadata: null, created_at: new Date(), attempt: 1 }, schema), schema)
}

/** Two tenants' batches in one room, `concurrency` handlers at once across them (as a shared turn makes them). */
function twoBatches(concurrency: number, handler: (event: OutboxEvent) => Promise<void>) {
  const room: SharedRoom = { turns: new SavepointTurns(undefined as unknown as Sql), slots: new HandlerSlots(concurrency) }
  const dispatch = () => new BatchDispatch(new HandlerRegistry({ 'order.*': handler }), { concurrency, handlerTimeoutMs: 5_000, log: silentLogger })
  return { room, a: dispatch(), b: dispatch() }
}

describe('handler slots shared by the batches of one transaction', () => {
  it('bound the handlers across the batches, and are taken in turn: a one-event batch waits for one handler of the other, not for all', async () => {
    let running = 0
    let most = 0
    const started: string[] = []
    const { room, a, b } = twoBatches(2, async (event) => {
      most = Math.max(most, ++running)
      started.push(event.schema)
      await new Promise((resolve) => setTimeout(resolve, 1))
      running--
    })
    const [ra, rb] = await Promise.all([a.run(rows('hot', 20), undefined, undefined, undefined, room), b.run(rows('cold', 1), undefined, undefined, undefined, room)])
    expect(ra.succeeded).toHaveLength(20)
    expect(rb.succeeded).toHaveLength(1)
    expect(most).toBe(2)
    // the hot batch took both slots first; the cold event has the first one given back
    expect(started.indexOf('cold')).toBe(2)
  })

  it('a batch stopped while it waits for a slot starts nothing more, and the other batch goes on', async () => {
    let release!: () => void
    const held = new Promise<void>((resolve) => (release = resolve))
    const { room, a, b } = twoBatches(1, async (event) => {
      if (event.schema === 'first') await held
    })
    const first = a.run(rows('first', 2), undefined, undefined, undefined, room)
    const second = b.run(rows('second', 3), undefined, undefined, undefined, room)
    b.abortBatch(new Error('stopped'))
    release()
    const [ra, rb] = await Promise.all([first, second])
    expect(ra.succeeded).toHaveLength(2)
    expect(rb.stopped?.message).toBe('stopped')
    expect(rb.succeeded).toHaveLength(0)
  })
})
