import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { claimQueries, outboxClaimBatch } from '../../src/poller/claim.js'
import { withBatchForm } from '../../src/poller/handler-registry.js'
import { relaySuite, startRelay } from '../support/relay.js'
import { startHoldingProxy } from '../support/holding-proxy.js'
import { bindQueue, deleteAmqp, deleteRedisStream, queueLength, withRedis } from '../support/sink-receivers.js'
import { waitFor } from '../support/wait-for.js'

// A poller whose every handler is a Redis or RabbitMQ sink overlaps its batches: the next one is claimed and published while the
// previous one's confirms are outstanding, each in its own transaction on its own connection.
const run = randomBytes(4).toString('hex')
const outbox = outboxTable('public', 'outbox')
// the outbox is ordered by entity (every relay of this file says so): the claim test needs its head rule
const { db, afterFile } = relaySuite({ items: { columns: 'id int primary key, name text', entity: 'item' } }, { ordering: 'entity' })

interface Row {
  id: number
  entity_id: string
  processed: boolean
  attempts: number
  dead: boolean
  suspect: boolean
  last_error: string | null
}

async function outboxRows(): Promise<Row[]> {
  return db.sql<Row[]>`select id::int, entity_id, processed_at is not null as processed, attempts, dead_at is not null as dead, suspect, last_error from outbox order by id`
}

/** `rounds` events for each of `entities` entities, interleaved by round, as real traffic comes. */
async function insertRounds(entities: number, rounds: number): Promise<void> {
  await db.sql`insert into outbox (event_type, entity_type, entity_id, payload)
               select 'item.updated', 'item', e::text, jsonb_build_object('round', r) from generate_series(1, ${rounds}::int) r, generate_series(1, ${entities}::int) e order by r, e`
}

describe('overlapping batches', () => {
  it('an ordered claim in a second transaction of the same process skips an entity whose head the first transaction holds, and takes it once that commits', async () => {
    // ids in order: x1, y1, x2, y2
    await db.sql`insert into outbox (event_type, entity_type, entity_id, payload) values ('item.updated', 'item', 'x', '{}'), ('item.updated', 'item', 'y', '{}'), ('item.updated', 'item', 'x', '{}'), ('item.updated', 'item', 'y', '{}')`
    const ids = (await outboxRows()).map((row) => String(row.id))
    const queries = claimQueries(outbox, { ordering: 'entity', onDead: 'continue' })
    const first = await db.sql.reserve()
    const second = await db.sql.reserve()
    try {
      const claim = async (connection: typeof first, batchSize: number) =>
        (await outboxClaimBatch(connection, queries, { batchSize, maxBytes: 1e9, suspects: false, fromId: '0' })).events.map((event) => event.id)
      expect(await claim(first, 1)).toEqual([ids[0]]) // x1, locked by the first transaction
      // x1 is locked (skipped) but still pending: x2 is no head, and y2 waits for y1, claimed in this very claim
      expect(await claim(second, 10)).toEqual([ids[1]])
      await first.unsafe('update outbox set processed_at = now() where id = $1', [ids[0]!])
      await first.unsafe('commit')
      await second.unsafe('update outbox set processed_at = now() where id = $1', [ids[1]!])
      await second.unsafe('commit')
      expect(await claim(first, 10)).toEqual([ids[2], ids[3]])
      await first.unsafe('rollback')
    } finally {
      first.release()
      second.release()
    }
  })

  it('batches that overlap under --ordering entity, two in flight: each entity in id order and never two at once, failures retried', async () => {
    const entities = 40
    const rounds = 10
    const batchSize = 10
    let calls = 0
    let inFlight = 0
    let mostInFlight = 0
    /** The first batch's call waits until the second batch's comes: two batches are in flight at once. */
    let overlapped: () => void = () => {}
    const secondBatchArrived = new Promise<void>((resolve) => (overlapped = resolve))
    const records: Array<{ entity: string; round: number; start: number; end: number }> = []
    // a sink's batch form, as registerSinks gives it for a broker: its batches may overlap
    const publish = withBatchForm(
      () => {},
      async (events) => {
        const first = ++calls === 1
        mostInFlight = Math.max(mostInFlight, (inFlight += events.length))
        if (calls === 2) overlapped()
        if (first) await secondBatchArrived
        const results = await Promise.all(
          events.map(async (event) => {
            const start = performance.now()
            await new Promise((resolve) => setTimeout(resolve, Math.random() * 5))
            const round = (event.payload as { round: number }).round
            // one event in 7 is refused at its first attempt: its entity waits for the retry, while later rounds of the
            // other entities are claimed past it
            if (event.attempt === 1 && (Number(event.entity_id) * rounds + round) % 7 === 0) return new Error('refused once')
            records.push({ entity: event.entity_id, round, start, end: performance.now() })
            return undefined
          }),
        )
        inFlight -= events.length
        return results
      },
      { overlaps: true },
    )
    await insertRounds(entities, rounds)
    await startRelay(db.url, [], { poller: { ordering: 'entity', batchSize, maxAttempts: 100, retryDelay: 200, retryDelayMax: 400 }, extra: { 'item.*': publish } })
    await waitFor('every event processed', async () => (await outboxRows()).every((row) => row.processed), 60_000, 100)
    expect(mostInFlight).toBe(2 * batchSize) // the overlap did happen
    const rows = await outboxRows()
    expect(rows.some((row) => row.attempts > 0)).toBe(true) // and so did the failures
    expect(records).toHaveLength(entities * rounds)
    for (let entity = 1; entity <= entities; entity++) {
      const own = records.filter((record) => record.entity === String(entity))
      // handled in round order, each after the previous one ended
      expect(own.map((record) => record.round)).toEqual(Array.from({ length: rounds }, (_, i) => i + 1))
      for (let i = 1; i < own.length; i++) expect(own[i]!.start).toBeGreaterThanOrEqual(own[i - 1]!.end)
    }
  })

  it('a message the broker refuses while two batches are in flight fails only its own event', async () => {
    const exchange = `outbox-overlap-${run}`
    const queue = `outbox-overlap-${run}-items`
    await bindQueue(exchange, queue, 'item.*')
    afterFile(() => deleteAmqp(exchange, [queue]))
    const proxy = await startHoldingProxy({ host: '127.0.0.1', port: 5672 })
    afterFile(() => proxy.close())
    const relay = await startRelay(db.url, [`amqp://guest:guest@${proxy.address}/?exchange=${exchange}`], { poller: { ordering: 'entity', batchSize: 10, maxAttempts: 1 } })
    proxy.hold()
    // two batches of 10, each with one event no queue is bound for (entities 5 and 15): returned, a failed attempt
    await db.sql`insert into outbox (event_type, entity_type, entity_id, payload)
                 select case when n in (5, 15) then 'other.updated' else 'item.updated' end, 'item', n::text, '{}' from generate_series(1, 20) n`
    // both batches published, no confirm back yet: neither has committed
    await waitFor('both batches published', async () => (await queueLength(queue)) === 18, 8_000)
    expect((await outboxRows()).some((row) => row.processed || row.attempts > 0)).toBe(false)
    proxy.release()
    await waitFor('every event settled', async () => (await outboxRows()).every((row) => row.processed || row.dead))
    const rows = await outboxRows()
    expect(rows.filter((row) => row.dead).map((row) => row.entity_id)).toEqual(['5', '15'])
    expect(rows.filter((row) => row.dead).every((row) => row.attempts === 1 && /unroutable/.test(row.last_error ?? ''))).toBe(true)
    expect(rows.filter((row) => !row.dead).every((row) => row.processed && row.attempts === 0)).toBe(true)
    await relay.stop()
  })

  it('RabbitMQ: an outage while two batches are in flight charges nothing: both defer their events, delivered once the broker is back', async () => {
    const exchange = `outbox-overlap-out-${run}`
    const queue = `${exchange}-items`
    await bindQueue(exchange, queue, 'item.*')
    afterFile(() => deleteAmqp(exchange, [queue]))
    const proxy = await startHoldingProxy({ host: '127.0.0.1', port: 5672 })
    afterFile(() => proxy.close())
    const relay = await startRelay(db.url, [`amqp://guest:guest@${proxy.address}/?exchange=${exchange}`], { poller: { ordering: 'entity', batchSize: 10, maxAttempts: 1 } })
    proxy.hold()
    await db.sql`insert into outbox (event_type, entity_type, entity_id, payload) select 'item.updated', 'item', n::text, '{}' from generate_series(1, 20) n`
    await waitFor('both batches published', async () => (await queueLength(queue)) === 20, 8_000)
    proxy.cut() // the channel closes under both batches, every confirm outstanding
    await waitFor('both batches deferred', async () => (await db.sql<{ n: number }[]>`select count(*)::int as n from outbox where retry_at is not null`)[0]!.n === 20)
    expect((await outboxRows()).every((row) => !row.processed && row.attempts === 0 && !row.dead && !row.suspect)).toBe(true) // no attempt charged
    proxy.restore()
    await waitFor('every event processed', async () => (await outboxRows()).every((row) => row.processed), 30_000, 100)
    expect((await outboxRows()).every((row) => row.attempts === 0 && !row.dead)).toBe(true)
    expect(await queueLength(queue)).toBe(40) // at least once: the unconfirmed messages stayed, each was published again
    await relay.stop()
  })

  it('a broker outage while two batches are in flight charges nothing: both roll their events back to the queue, delivered once it is back', async () => {
    const stream = `outbox-overlap-out-${run}`
    afterFile(() => deleteRedisStream(stream))
    const length = () => withRedis((client) => client.xLen(stream))
    const proxy = await startHoldingProxy({ host: '127.0.0.1', port: 6379 })
    afterFile(() => proxy.close())
    const relay = await startRelay(db.url, [`redis://${proxy.address}?stream=${stream}&dedupe_ttl=10m`], { poller: { ordering: 'entity', batchSize: 10, maxAttempts: 1 } })
    proxy.hold()
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 20) n`
    await waitFor('both batches published', async () => (await length()) === 20, 8_000)
    proxy.cut() // the broker is gone, as its client sees it, with every confirm outstanding
    await waitFor('the outage logged', () => relay.log.lines.some((line) => line.msg.startsWith('sink unavailable')))
    // both batches settle their events as deferred: back to the queue, to wait out the outage
    await waitFor('both batches deferred', async () => (await db.sql<{ n: number }[]>`select count(*)::int as n from outbox where retry_at is not null`)[0]!.n === 20)
    expect((await outboxRows()).every((row) => !row.processed && row.attempts === 0 && !row.dead && !row.suspect)).toBe(true) // no attempt charged
    proxy.restore()
    await waitFor('every event processed', async () => (await outboxRows()).every((row) => row.processed), 30_000, 100)
    expect((await outboxRows()).every((row) => row.attempts === 0 && !row.dead)).toBe(true)
    expect(await length()).toBe(20) // the re-publishes were dropped as duplicates
    await relay.stop()
  })
})
