import { afterAll, beforeAll, expect, it } from 'vitest'
import { captureTable } from '../../src/capture/capture.js'
import { outboxMoveCaptures } from '../../src/capture/move-captures.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { outboxPartitionBy } from '../../src/outbox/partition-layout.js'
import { createPoller } from '../../src/create-poller.js'
import { type Poller } from '../../src/poller/poller.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

const plain = outboxTable('public', 'outbox')
const next = outboxTable('public', 'outbox_next')
const entities = 20
let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  await migrate({ sql: db.sql, ordering: 'entity' })
  await db.sql`create table counters (id int primary key, version int not null, team int)`
  await db.sql`insert into counters select g, 0 from generate_series(1, ${entities}) g`
  await captureTable(db.sql, plain, { table: 'counters', entity: 'counter', events: ['update'], groupBy: 'team' })
})
afterAll(() => db.drop())

it('a plain outbox moved to a partitioned one while writers write and replicas drain: every event handled once, each entity in write order', async () => {
  const handled: Array<{ entity: string; n: number; table: string }> = []
  const replicas = (table: string): Poller[] =>
    [1, 2].map(() => {
      const poller = createPoller({
        connectionString: db.url,
        table,
        ordering: 'entity',
        intervalMin: 20,
        intervalMax: 200,
        batchSize: 20,
        handlers: {
          'counter.*': async (event) => {
            handled.push({ entity: event.entity_id, n: (event.payload as { data: { version: number } }).data.version, table })
            await new Promise((resolve) => setTimeout(resolve, Math.random() * 3))
          },
        },
      })
      return poller
    })
  let writing = true
  let written = 0
  const writers = [1, 2, 3].map(async () => {
    while (writing) {
      await db.sql`update counters set version = version + 1 where id = ${1 + Math.floor(Math.random() * entities)}`
      written++
    }
  })
  const old = replicas('outbox')
  const fresh = replicas('outbox_next')
  let movedAt = 0
  try {
    await Promise.all(old.map((poller) => poller.start()))
    await waitFor('events in the old outbox', async () => handled.length > 200, 20_000)

    // the move: the new outbox beside the old, the captures moved to it, the old drained to empty
    await migrate({ sql: db.sql, table: next.table, partitionBy: 'day', ordering: 'entity' })
    expect(await outboxPartitionBy(db.sql, next)).toBe('day')
    expect((await outboxMoveCaptures(db.sql, plain, next)).map((c) => [c.table, c.events, c.groupBy])).toEqual([['counters', ['update'], 'team']])
    await waitFor('the old outbox drained', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is null`)[0]!.n === 0, 30_000)
    for (const poller of old) await poller.stop({ timeoutMs: 5000 })
    movedAt = handled.length
    await Promise.all(fresh.map((poller) => poller.start()))
    await waitFor('events in the new outbox', async () => handled.filter((h) => h.table === 'outbox_next').length > 200, 20_000)
    writing = false
    await Promise.all(writers)
    await waitFor('the new outbox drained', async () => (await db.sql`select count(*)::int as n from outbox_next where processed_at is null`)[0]!.n === 0, 30_000)
  } finally {
    writing = false
    await Promise.all(writers)
    for (const poller of [...old, ...fresh]) await poller.stop({ timeoutMs: 5000 })
  }

  // every write's event, once: each entity's events are n = 1, 2, 3, … up to its final counter, handled in that order
  const finals = new Map((await db.sql<Array<{ id: number; n: number }>>`select id, version as n from counters`).map((row) => [String(row.id), row.n]))
  expect(handled.length).toBe(written)
  for (const [entity, final] of finals) {
    const order = handled.filter((h) => h.entity === entity).map((h) => h.n)
    expect(order).toEqual(Array.from({ length: final }, (_, i) => i + 1))
  }
  // the old replicas handled only the old outbox's events, all of them before the new replicas started
  expect(handled.slice(0, movedAt).every((h) => h.table === 'outbox')).toBe(true)
  expect(handled.slice(movedAt).every((h) => h.table === 'outbox_next')).toBe(true)
  const [counts] = await db.sql<Array<{ old: number; fresh: number }>>`select (select count(*)::int from outbox) as old, (select count(*)::int from outbox_next) as fresh`
  expect(counts!.old + counts!.fresh).toBe(written)
  expect(counts!.old).toBe(movedAt)
})

it('move-captures keeps the options exactly: an excluded column dropped before the move stays excluded when re-added after it', async () => {
  const from = outboxTable('public', 'outbox_from')
  const to = outboxTable('public', 'outbox_to')
  await migrate({ sql: db.sql, table: 'outbox_from' })
  await migrate({ sql: db.sql, table: 'outbox_to' })
  await db.sql`create table accounts (id int primary key, team int, token text, note text)`
  await captureTable(db.sql, from, { table: 'accounts', entity: 'account', excludeColumns: ['token'], ignoreColumns: ['note'], groupBy: 'team' })
  await db.sql`alter table accounts drop column token`
  expect((await outboxMoveCaptures(db.sql, from, to)).map((c) => [c.table, c.groupBy, c.ignoreColumns])).toEqual([['accounts', 'team', ['note']]])
  await db.sql`alter table accounts add column token text`
  await db.sql`insert into accounts (id, team, note, token) values (1, 7, 'n', 'secret')`
  expect(await db.sql`select event_type, group_key, payload from outbox_to`).toEqual([{ event_type: 'account.created', group_key: '7', payload: { data: { id: 1, team: 7, note: 'n' } } }])
  expect(await db.sql`select count(*)::int as n from outbox_from`).toEqual([{ n: 0 }])
})
