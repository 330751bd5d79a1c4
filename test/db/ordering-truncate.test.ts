import postgres, { type Sql } from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { captureTable } from '../../src/capture/capture.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { type ClaimQueries, claimQueries, outboxClaimBatch, outboxRollback } from '../../src/poller/claim.js'
import { createPoller } from '../../src/create-poller.js'
import { type Poller } from '../../src/poller/poller.js'
import type { OutboxEvent } from '../../src/types.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

const outbox = outboxTable('public', 'outbox')
let db: TestDatabase
const connections: Sql[] = []
const pollers: Poller[] = []

beforeAll(async () => {
  db = await createTestDatabase({ ordering: 'entity' })
  await db.sql`create table items (id int primary key, name text)`
  await db.sql`create table others (id int primary key)`
  await captureTable(db.sql, outbox, { table: 'items', entity: 'item' })
  await captureTable(db.sql, outbox, { table: 'others', entity: 'other' })
})
afterEach(async () => {
  for (const poller of pollers.splice(0)) await poller.stop({ timeoutMs: 5000 })
  for (const connection of connections.splice(0)) await connection.end({ timeout: 5 })
  await db.sql.unsafe('truncate items, others; truncate outbox, outbox_settings') // the outbox last: the first statement writes events
})
afterAll(async () => {
  await db.drop()
})

/** A replica's claim connection: a pool of one, as a poller's batch runs on. */
function connection(): Sql {
  const sql = postgres(db.url, { max: 1, onnotice: () => {} })
  connections.push(sql)
  return sql
}

const claimed = new Map<Sql, OutboxEvent[]>()

/** Claims on `replica` (its transaction stays open) and returns what it took, as `type entity_id`. */
async function claim(replica: Sql, queries: ClaimQueries): Promise<string[]> {
  const batch = await outboxClaimBatch(replica, queries, { batchSize: 100, maxBytes: 1 << 30, suspects: false, fromId: '0' })
  claimed.set(replica, batch.events)
  return batch.events.map(name)
}

const name = (event: OutboxEvent) => `${event.event_type} ${event.entity_id}`

/** Settles those of the replica's claimed events named `type entity_id` as processed, and commits. */
async function processAndCommit(replica: Sql, names: string[]): Promise<void> {
  const ids = claimed.get(replica)!.filter((event) => names.includes(name(event))).map((event) => event.id)
  expect(ids).toHaveLength(names.length)
  await replica.unsafe(`update ${outbox.qualified} set processed_at = now() where id = any ($1::bigint[])`, [ids])
  await replica.unsafe('commit')
}

/** Older row events, a TRUNCATE, newer row events; other entity types' events before and after. */
async function writeAroundTruncate(): Promise<void> {
  await db.sql`insert into items values (1, 'a'), (2, 'b')`
  await db.sql`insert into others values (1)`
  await db.sql`truncate items`
  await db.sql`insert into items values (1, 'again'), (3, 'c')`
  await db.sql`insert into others values (2)`
}

describe('a truncated event is a barrier for its entity type under --ordering entity', () => {
  it('it waits for every older event of its type, in flight on another replica or waiting for its retry; newer ones wait for it', async () => {
    await writeAroundTruncate()
    const queries = claimQueries(outbox, { ordering: 'entity', onDead: 'continue' })
    const [a, b] = [connection(), connection()]

    // other types flow past the barrier; the item events before it are the items' heads
    expect((await claim(a, queries)).sort()).toEqual(['item.created 1', 'item.created 2', 'other.created 1', 'other.created 2'])
    expect(await claim(b, queries)).toEqual([]) // the older ones are in flight on a: neither the truncate nor what follows it
    await outboxRollback(b)
    await processAndCommit(a, ['item.created 1', 'other.created 1', 'other.created 2'])
    // item 2 failed: waiting for its retry, it still holds the barrier
    await db.sql`update outbox set attempts = 1, retry_at = now() + interval '1 hour' where event_type = 'item.created' and entity_id = '2' and processed_at is null`
    expect(await claim(b, queries)).toEqual([])
    await outboxRollback(b)
    await db.sql`update outbox set processed_at = now() where event_type = 'item.created' and entity_id = '2' and processed_at is null`

    expect(await claim(b, queries)).toEqual(['item.truncated ']) // alone: the newer items wait for it
    expect(await claim(a, queries)).toEqual([]) // nor does another replica take them while b holds it
    await outboxRollback(a)
    await processAndCommit(b, ['item.truncated '])
    expect((await claim(a, queries)).sort()).toEqual(['item.created 1', 'item.created 3'])
    await outboxRollback(a)
  })

  it('an older dead event holds the barrier under --ordering-on-dead block, not under continue; a dead barrier likewise', async () => {
    await writeAroundTruncate()
    await db.sql`update outbox set dead_at = now() where event_type = 'item.created' and entity_id = '2'`
    await db.sql`update outbox set processed_at = now() where event_type = 'item.created' and entity_id = '1' and id = (select min(id) from outbox)`
    const replica = connection()
    const continuing = claimQueries(outbox, { ordering: 'entity', onDead: 'continue' })
    const blocking = claimQueries(outbox, { ordering: 'entity', onDead: 'block' })
    expect(await claim(replica, blocking)).toEqual(['other.created 1', 'other.created 2'])
    await outboxRollback(replica)
    expect((await claim(replica, continuing)).sort()).toEqual(['item.truncated ', 'other.created 1', 'other.created 2'])
    await outboxRollback(replica)
    await db.sql`update outbox set dead_at = now() where event_type = 'item.truncated'`
    expect((await claim(replica, blocking)).filter((name) => name.startsWith('item'))).toEqual([])
    await outboxRollback(replica)
    expect((await claim(replica, continuing)).filter((name) => name.startsWith('item')).sort()).toEqual(['item.created 1', 'item.created 3'])
    await outboxRollback(replica)
  })

  it('two pollers: while an older item event is held in its handler, the other poller handles other types but not the truncation; then all in order', async () => {
    await writeAroundTruncate()
    await db.sql`insert into others select n from generate_series(3, 40) n`
    const log: string[] = []
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    const handler = async (event: OutboxEvent) => {
      const name = `${event.event_type} ${event.entity_id}`
      log.push(`start ${name}`)
      if (event.event_type === 'item.created' && event.entity_id === '1' && (event.payload as { data: { name: string } }).data.name === 'a') await gate
      log.push(`end ${name}`)
    }
    for (let i = 0; i < 2; i++) {
      const poller = createPoller({ connectionString: db.url, ordering: 'entity', batchSize: 1, intervalMin: 10, intervalMax: 50, handlers: handler })
      pollers.push(poller)
      await poller.start()
    }
    // every other event is handled while item 1 waits at the gate: the pollers kept claiming
    await waitFor('the others handled', () => log.filter((line) => line.startsWith('end other')).length === 40, 30_000)
    expect(log.filter((line) => line.includes('item.truncated'))).toEqual([])
    release()
    await waitFor('everything handled', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is null`)[0]!.n === 0, 30_000)
    const items = log.filter((line) => line.includes(' item.'))
    const at = (line: string) => items.indexOf(line)
    expect(at('start item.truncated ')).toBe(at('end item.truncated ') - 1) // nothing of the type ran beside it
    expect(items.slice(0, at('start item.truncated ')).sort()).toEqual(['end item.created 1', 'end item.created 2', 'start item.created 1', 'start item.created 2'])
    expect(items.slice(at('end item.truncated ') + 1).sort()).toEqual(['end item.created 1', 'end item.created 3', 'start item.created 1', 'start item.created 3'])
  })

  it('three pollers, rounds of writes and truncations with random delays and a failure: no event of a type crosses a truncation', async () => {
    const handled: Array<{ id: bigint; type: string; start: number; end: number }> = []
    let clock = 0
    let failed = false
    const handler = async (event: OutboxEvent) => {
      const start = ++clock
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 3))
      if (event.event_type === 'item.truncated' && !failed) {
        failed = true // the first truncation fails once: its retry holds the barrier
        throw new Error('clearing the copy failed')
      }
      handled.push({ id: BigInt(event.id), type: event.entity_type, start, end: ++clock })
    }
    for (let i = 0; i < 3; i++) {
      const poller = createPoller({ connectionString: db.url, ordering: 'entity', batchSize: 10, concurrency: 4, retryDelay: 20, intervalMin: 10, intervalMax: 50, handlers: handler })
      pollers.push(poller)
      await poller.start()
    }
    for (let round = 0; round < 5; round++) {
      await db.sql`insert into items select n, 'r' || ${round} from generate_series(1, 30) n`
      await db.sql`update items set name = name || '+' where id % 3 = 0`
      await db.sql`insert into others select n + 100 * ${round} from generate_series(1, 20) n`
      await db.sql`truncate items`
    }
    const [{ total }] = await db.sql`select count(*)::int as total from outbox`
    await waitFor('everything handled', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is null`)[0]!.n === 0, 60_000)
    expect(handled).toHaveLength(total)
    const [{ truncations }] = await db.sql`select array_agg(id::text order by id) as truncations from outbox where event_type = 'item.truncated'`
    expect(truncations).toHaveLength(5)
    for (const barrier of (truncations as string[]).map(BigInt)) {
      const t = handled.find((h) => h.id === barrier)!
      for (const h of handled.filter((h) => h.type === 'item' && h.id !== barrier)) {
        if (h.id < barrier) expect(h.end).toBeLessThan(t.start)
        else expect(h.start).toBeGreaterThan(t.end)
      }
    }
    expect(failed).toBe(true)
  })
})
