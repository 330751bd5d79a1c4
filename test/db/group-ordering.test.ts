import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { captureTable } from '../../src/capture/capture.js'
import { emit } from '../../src/capture/emit.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { claimQueries, outboxClaimBatch } from '../../src/poller/claim.js'
import { fixturePath, type Replica, startReplica } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

let db: TestDatabase
let directory: string
const replicas: Replica[] = []
const outbox = outboxTable('public', 'outbox')

beforeAll(async () => {
  db = await createTestDatabase({ ordering: 'group' })
  directory = await mkdtemp(join(tmpdir(), 'outbox-group-ordering-'))
})
afterEach(async () => {
  for (const replica of replicas.splice(0)) {
    if (replica.child.exitCode === null && replica.child.signalCode === null) replica.child.kill('SIGKILL')
    await replica.exited
  }
  await db.sql`truncate outbox, outbox_settings`
})
afterAll(async () => {
  await db.drop()
  await rm(directory, { recursive: true, force: true })
})

function replica(file: string, args: string[], env: Record<string, string> = {}): Replica {
  const started = startReplica(
    ['--handlers', fixturePath('ordered-handler.js'), '--ordering', 'group', '--interval-min', '10ms', '--interval-max', '100ms', '--retry-delay', '20ms', '--retry-delay-max', '100ms', ...args],
    { DATABASE_URL: db.url, RECORD_FILE: file, ...env },
  )
  replicas.push(started)
  return started
}

interface Handled { entity: string; id: number; start: number; end: number; pid: number; group: string | null }
async function handled(file: string): Promise<Handled[]> {
  const text = await readFile(file, 'utf8').catch(() => '')
  return text.split('\n').filter(Boolean).map((line) => {
    const [entity, id, start, end, pid, group] = line.split(' ')
    return { entity: entity!, id: Number(id), start: Number(start), end: Number(end), pid: Number(pid), group: group === '-' ? null : group! }
  })
}

/**
 * Checks, from what the handlers recorded, that each group's events and each entity's events were handled in id
 * order and never two at once. `redone`: a killed replica's handled but uncommitted events, handled again later;
 * only an event's last completion counts.
 */
async function expectOrdered(records: Handled[], redone: { pid: number } | undefined = undefined): Promise<void> {
  const last = new Map<number, Handled>()
  for (const record of [...records].sort((a, b) => a.end - b.end)) {
    if (last.has(record.id)) expect(last.get(record.id)!.pid).toBe(redone?.pid) // only the killed replica's work is redone
    last.set(record.id, record)
  }
  const rows = await db.sql<{ id: number; entity_id: string; group_key: string | null }[]>`select id::int, entity_id, group_key from outbox order by id`
  expect([...last.keys()].sort((a, b) => a - b)).toEqual(rows.map((row) => row.id)) // every event, once
  const sequences = new Map<string, number[]>()
  for (const row of rows) {
    for (const key of [`entity ${row.entity_id}`, ...(row.group_key === null ? [] : [`group ${row.group_key}`])]) sequences.set(key, [...(sequences.get(key) ?? []), row.id])
  }
  for (const [, ids] of sequences) {
    const events = ids.map((id) => last.get(id)!)
    // completed in id order…
    expect([...events].sort((a, b) => a.end - b.end).map((e) => e.id)).toEqual(ids)
    // …and each started after the previous one ended
    for (let i = 1; i < events.length; i++) expect(events[i]!.start).toBeGreaterThanOrEqual(events[i - 1]!.end)
  }
}

/** 20 groups of 5 entities each (entity e belongs to group e % 20), `rounds` events per entity, interleaved; entities 101–120 have no group. */
async function fill(rounds: number): Promise<void> {
  await db.sql`insert into outbox (event_type, entity_type, entity_id, group_key, payload)
               select 'line.updated', 'line', e::text, case when e <= 100 then 'order-' || (e % 20) end, jsonb_build_object('round', r)
                 from generate_series(1, ${rounds}::int) r, generate_series(1, 120) e order by r, e`
}

describe('ordering by group', () => {
  it('4 replicas, 20 groups of 5 entities and 20 entities without a group, random delays and failures: each group and each entity in id order, never two at once', async () => {
    const file = join(directory, 'ordered.log')
    await fill(25) // 3,000 events
    for (let i = 0; i < 4; i++) replica(file, ['--batch-size', '50', '--concurrency', '16', '--max-attempts', '1000'], { FAIL_PERCENT: '3', MAX_DELAY_MS: '4' })
    await waitFor('all 3,000 events processed', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is null`)[0]!.n === 0, 120_000, 250)
    const records = await handled(file)
    expect(records).toHaveLength(3_000)
    expect((await db.sql`select count(*)::int as n from outbox where attempts > 0`)[0]!.n).toBeGreaterThan(0) // random failures did happen
    expect(new Set(records.map((r) => r.pid)).size).toBeGreaterThan(1) // replicas shared the work
    expect(new Set(records.filter((r) => r.group === null).map((r) => r.entity)).size).toBe(20) // events without a group were handled too
    await expectOrdered(records)
  })

  it('a replica killed with SIGKILL mid-batch: its events go to the others, and every group stays in order', async () => {
    const file = join(directory, 'kill.log')
    await fill(10) // 1,200 events
    // unsupervised: the process killed is the one holding the batch
    const victim = replica(file, ['--no-supervise', '--batch-size', '40', '--concurrency', '8'], { MAX_DELAY_MS: '30' })
    await waitFor('the victim handling a batch', async () => (await handled(file)).some((r) => r.pid === victim.child.pid), 30_000, 20)
    // the others start once the victim holds a batch: started together, on a loaded machine they could drain it all first
    for (let i = 0; i < 2; i++) replica(file, ['--batch-size', '40', '--concurrency', '8'], { MAX_DELAY_MS: '10' })
    victim.child.kill('SIGKILL')
    expect((await victim.exited).signal).toBe('SIGKILL')
    await waitFor('all 1,200 events processed', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is null`)[0]!.n === 0, 120_000, 250)
    const records = await handled(file)
    // the victim died mid-batch: events it had handled were rolled back and handled again by another replica
    const victims = new Set(records.filter((r) => r.pid === victim.child.pid).map((r) => r.id))
    expect(records.some((r) => r.pid !== victim.child.pid && victims.has(r.id))).toBe(true)
    await expectOrdered(records, { pid: victim.child.pid! })
  })
})

describe('captured and emitted events under --ordering group', () => {
  it('reach the handler with their group, in order within it: an order, its lines, a line moved to another order, an emitted event', async () => {
    await db.sql`create table if not exists orders (id int primary key, state text)`
    await db.sql`create table if not exists order_lines (id int primary key, order_id int, sku text)`
    await captureTable(db.sql, outbox, { table: 'orders', entity: 'order', groupBy: 'id' })
    await captureTable(db.sql, outbox, { table: 'order_lines', entity: 'order_line', groupBy: 'order_id', mode: 'row' })
    await db.sql`insert into orders values (1, 'new'), (2, 'new')`
    await db.sql`insert into order_lines values (10, 1, 'a'), (11, 1, 'b'), (20, 2, 'c')`
    await db.sql`update order_lines set order_id = 2 where id = 11`
    await db.sql.begin(async (tx) => {
      await tx`update orders set state = 'paid' where id = 1`
      await emit(tx, { event_type: 'order.receipt_sent', entity_type: 'order', entity_id: '1', group_key: '1' }, outbox)
    })
    await db.sql`delete from order_lines where id = 11`
    const file = join(directory, 'captured.log')
    for (let i = 0; i < 2; i++) replica(file, ['--batch-size', '3'], { MAX_DELAY_MS: '10' })
    await waitFor('every event processed', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is null`)[0]!.n === 0, 60_000, 100)
    const records = await handled(file)
    const seen = (group: string) => records.filter((r) => r.group === group).sort((a, b) => a.end - b.end).map((r) => r.entity)
    expect(seen('1')).toEqual(['1', '10', '11', '1', '1']) // created order, its lines, then paid and the receipt
    expect(seen('2')).toEqual(['2', '20', '11', '11']) // the moved line's update, then its delete, in its new group
    await expectOrdered(records)
  })
})

describe('the group head rule', () => {
  const ids = async () => (await db.sql<{ id: string }[]>`select id::text from outbox order by outbox.id`).map((row) => row.id)
  /** Claims in a transaction of its own, as a replica does, and returns the ids claimed (the transaction stays open). */
  async function claim(connection: Awaited<ReturnType<typeof db.sql.reserve>>, onDead: 'continue' | 'block' = 'continue'): Promise<string[]> {
    const batch = await outboxClaimBatch(connection, claimQueries(outbox, { ordering: 'group', onDead }), { batchSize: 100, maxBytes: 1e9, suspects: false, fromId: '0' })
    return batch.events.map((event) => event.id)
  }

  it('a hot entity and group with thousands of pending events: the claim takes the head alone, probing each candidate, never an anti join (hashed by entity, it compared every pair of the backlog)', async () => {
    await db.sql`insert into outbox (event_type, entity_type, entity_id, group_key, payload) select 'counter.updated', 'counter', '1', 'g', '{}' from generate_series(1, 6000)`
    await db.sql`analyze outbox`
    const [head] = await ids()
    const connection = await db.sql.reserve()
    try {
      expect(await claim(connection)).toEqual([head])
      await connection`rollback`
      for (const mode of ['force_generic_plan', 'force_custom_plan']) {
        await connection.unsafe(`begin; set local jit = off; set local plan_cache_mode = ${mode}`)
        await connection.unsafe(`prepare hot_claim(int, bigint, boolean, bigint) as ${claimQueries(outbox, { ordering: 'group', onDead: 'continue' }).claim}`)
        const plan = (await connection.unsafe(`explain execute hot_claim(100, 1000000000, false, 0)`)).map((row) => row['QUERY PLAN']).join('\n')
        await connection.unsafe('rollback; deallocate hot_claim')
        expect(plan, mode).toMatch(/SubPlan/)
        expect(plan, mode).not.toMatch(/Anti Join/)
      }
    } finally {
      await connection`rollback`.catch(() => {})
      connection.release()
    }
  })

  it('a group runs its head only; a row that moved to another group waits for its own earlier events, and holds back its new group meanwhile; no group: by entity', async () => {
    // line a in order 1, line b in order 1, line c without an order (twice), line a moved to order 2, line d in order 2
    await db.sql`insert into outbox (event_type, entity_type, entity_id, group_key, payload) values
      ('line.created', 'line', 'a', '1', '{}'), ('line.created', 'line', 'b', '1', '{}'), ('line.created', 'line', 'c', null, '{}'),
      ('line.updated', 'line', 'c', null, '{}'), ('line.updated', 'line', 'a', '2', '{}'), ('line.created', 'line', 'd', '2', '{}')`
    const [a1, b1, c1, c2, a2, d2] = await ids()
    const first = await db.sql.reserve()
    const second = await db.sql.reserve()
    try {
      expect(await claim(first)).toEqual([a1, c1]) // b waits for a in order 1; a's move waits for a; d waits for a's move
      expect(await claim(second)).toEqual([]) // another replica: every head is taken
      await second`rollback`
      await first`update outbox set processed_at = now() where id in (${a1!}, ${c1!})`
      await first`commit`
      expect(await claim(second)).toEqual([b1, c2, a2])
      await second`update outbox set processed_at = now() where id in (${b1!}, ${c2!}, ${a2!})`
      await second`commit`
      expect(await claim(first)).toEqual([d2])
      await first`rollback`
    } finally {
      first.release()
      second.release()
    }
  })

  it('a dead event holds back its group and entity under block, not under continue; a failing one (waiting for its retry) holds back only its own', async () => {
    await db.sql`insert into outbox (event_type, entity_type, entity_id, group_key, payload) values
      ('line.created', 'line', 'a', '1', '{}'), ('line.created', 'line', 'b', '1', '{}'), ('line.created', 'line', 'x', '9', '{}')`
    const [a, b, x] = await ids()
    const connection = await db.sql.reserve()
    try {
      await db.sql`update outbox set attempts = 1, retry_at = now() + interval '1 hour' where id = ${a!}`
      expect(await claim(connection)).toEqual([x]) // group 1 waits for its retry, group 9 does not
      await connection`rollback`
      await db.sql`update outbox set retry_at = null, dead_at = now() where id = ${a!}`
      expect(await claim(connection, 'block')).toEqual([x])
      await connection`rollback`
      expect(await claim(connection, 'continue')).toEqual([b, x])
      await connection`rollback`
    } finally {
      connection.release()
    }
  })

  for (const mode of ['row', 'statement'] as const) {
    it(`by ${mode}: a TRUNCATE between captured inserts of one transaction is a barrier under group ordering too: the inserts before it first, those after it after it`, async () => {
      const table = `truncated_lines_${mode}`
      await db.sql.unsafe(`create table ${table} (id int primary key, order_id int)`)
      await captureTable(db.sql, outbox, { table, entity: `tl_${mode}`, groupBy: 'order_id', mode })
      await db.sql.begin(async (tx) => {
        await tx.unsafe(`insert into ${table} values (1, 1), (2, 1)`)
        await tx.unsafe(`truncate ${table}`)
        await tx.unsafe(`insert into ${table} values (1, 1), (3, 2)`)
      })
      const rows = await db.sql<{ id: string; event_type: string }[]>`select id::text, event_type from outbox order by outbox.id`
      expect(rows.map((row) => row.event_type)).toEqual([`tl_${mode}.created`, `tl_${mode}.created`, `tl_${mode}.truncated`, `tl_${mode}.created`, `tl_${mode}.created`])
      const [before1, before2, truncated, after1, after3] = rows.map((row) => row.id)
      const connection = await db.sql.reserve()
      try {
        for (const expected of [[before1], [before2], [truncated], [after1, after3]]) {
          expect(await claim(connection)).toEqual(expected)
          await connection`update outbox set processed_at = now() where id in ${db.sql(expected as string[])}`
          await connection`commit`
        }
      } finally {
        connection.release()
      }
    })
  }

  it('a group value of any length: the index holds its hash, and the claim still tells two long groups apart', async () => {
    const long = (seed: string) => `(select string_agg(md5('${seed}' || i), '') from generate_series(1, 200) i)` // 6,400 incompressible bytes
    await db.sql.unsafe(`insert into outbox (event_type, entity_type, entity_id, group_key, payload) values
      ('big.updated', 'big', '1', ${long('a')}, '{}'), ('big.updated', 'big', '2', ${long('a')}, '{}'), ('big.updated', 'big', '3', ${long('b')}, '{}')`)
    const rows = await db.sql<{ id: string }[]>`select id::text as id from outbox where entity_type = 'big' order by id`
    const connection = await db.sql.reserve()
    try {
      const claimed = await outboxClaimBatch(connection, claimQueries(outbox, { ordering: 'group', onDead: 'continue' }), { batchSize: 10, maxBytes: 1e9, suspects: false, fromId: '0' })
      // the second event of group a waits for the first; group b's head runs beside it
      expect(claimed.events.filter((event) => event.entity_type === 'big').map((event) => event.id)).toEqual([rows[0]!.id, rows[2]!.id])
      await connection`rollback`
    } finally {
      connection.release()
    }
    await db.sql`delete from outbox where entity_type = 'big'`
  })

  it('the claim probes the group index', async () => {
    const claimText = claimQueries(outbox, { ordering: 'group', onDead: 'continue' }).claim
    // 20,000 events of 5,000 groups
    await db.sql`insert into outbox (event_type, entity_type, entity_id, group_key, payload)
                 select 'line.updated', 'line', (n % 10000)::text, 'order-' || (n % 5000), '{}' from generate_series(1, 20000) n`
    await db.sql`analyze outbox`
    const plan = (await db.sql.unsafe(`explain ${claimText}`, [10, 1e9, false, '0'])).map((row) => row['QUERY PLAN'] as string).join('\n')
    // on a partitioned outbox (OUTBOX_TEST_PARTITION_BY), each partition's index has a name of its own
    expect(plan).toMatch(/outbox_group_pending|outbox_p\d+_hashtextextended_id_idx/)
    expect(plan).toMatch(/outbox_entity_pending|outbox_p\d+_entity_type_entity_id_id_idx/)
  })
})
