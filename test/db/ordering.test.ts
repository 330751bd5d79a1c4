import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { outboxCheckOrdering } from '../../src/outbox/outbox-checks.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { fixturePath, type Replica, runCli, startReplica } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

let db: TestDatabase
let directory: string
const replicas: Replica[] = []

beforeAll(async () => {
  db = await createTestDatabase({ ordering: 'entity' })
  directory = await mkdtemp(join(tmpdir(), 'outbox-ordering-'))
})
afterEach(async () => {
  for (const replica of replicas.splice(0)) {
    if (replica.child.exitCode === null) replica.child.kill('SIGTERM')
    await replica.exited
  }
  await db.sql`truncate outbox, outbox_settings`
})
afterAll(async () => {
  await db.drop()
  await rm(directory, { recursive: true, force: true })
})

function replica(file: string, args: string[], env: Record<string, string> = {}): Replica {
  const started = startReplica(['--handlers', fixturePath('ordered-handler.js'), '--interval-min', '10ms', '--interval-max', '100ms', '--retry-delay', '20ms', '--retry-delay-max', '100ms', ...args], { DATABASE_URL: db.url, RECORD_FILE: file, ...env })
  replicas.push(started)
  return started
}

interface Handled { entity: string; id: number; start: number; end: number }
async function handled(file: string): Promise<Handled[]> {
  const text = await readFile(file, 'utf8').catch(() => '')
  return text.split('\n').filter(Boolean).map((line) => {
    const [entity, id, start, end] = line.split(' ')
    return { entity: entity!, id: Number(id), start: Number(start), end: Number(end) }
  })
}

describe('per-entity ordering', () => {
  it('5 replicas, 200 entities × 50 events, random delays and failures: each entity in id order, never two at once', async () => {
    const file = join(directory, 'ordered.log')
    // 50 rounds over 200 entities, interleaved as real traffic is
    await db.sql`insert into outbox (event_type, entity_type, entity_id, payload)
                 select 'account.updated', 'account', e::text, jsonb_build_object('round', r) from generate_series(1, 50) r, generate_series(1, 200) e order by r, e`
    for (let i = 0; i < 5; i++) replica(file, ['--ordering', 'entity', '--batch-size', '50', '--concurrency', '16', '--max-attempts', '1000'], { FAIL_PERCENT: '3', MAX_DELAY_MS: '4' })
    await waitFor('all 10,000 events processed', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is null`)[0]!.n === 0, 120_000, 250)
    const records = await handled(file)
    expect(records).toHaveLength(10_000)
    const byEntity = new Map<string, Handled[]>()
    for (const record of records) byEntity.set(record.entity, [...(byEntity.get(record.entity) ?? []), record])
    expect(byEntity.size).toBe(200)
    const [{ retried }] = await db.sql`select count(*)::int as retried from outbox where attempts > 0`
    expect(retried).toBeGreaterThan(0) // random failures did happen
    for (const [entity, events] of byEntity) {
      const [ids] = [await db.sql`select id::int from outbox where entity_id = ${entity} order by id`]
      // handled in exactly the order of their ids (records are appended on completion)
      const inCompletionOrder = [...events].sort((a, b) => a.end - b.end).map((e) => e.id)
      expect(inCompletionOrder).toEqual(ids.map((row) => row.id))
      // and never two at a time: each starts after the previous one ended
      const byStart = [...events].sort((a, b) => a.start - b.start)
      for (let i = 1; i < byStart.length; i++) expect(byStart[i]!.start).toBeGreaterThanOrEqual(byStart[i - 1]!.end)
    }
  })

  it('3 replicas, truncations among 1,500 events: none starts before every earlier event of its type ended, none of its type after it starts before it ended', async () => {
    const file = join(directory, 'truncated.log')
    // 10 rounds over 150 entities, an account.truncated (entity id '') after rounds 3 and 7, another type beside
    await db.sql`insert into outbox (event_type, entity_type, entity_id, payload)
                 select t.type, t.entity, t.id, '{}' from generate_series(1, 10) r
                  cross join lateral (select 'account.updated' as type, 'account' as entity, e::text as id, e as n from generate_series(1, 100) e
                                      union all select 'note.updated', 'note', e::text, 100 + e from generate_series(1, 50) e
                                      union all select 'account.truncated', 'account', '', 1000 where r in (3, 7)) as t
                  order by r, t.n`
    for (let i = 0; i < 3; i++) replica(file, ['--ordering', 'entity', '--batch-size', '50', '--concurrency', '16', '--max-attempts', '1000'], { FAIL_PERCENT: '3', MAX_DELAY_MS: '4' })
    await waitFor('all 1,502 events processed', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is null`)[0]!.n === 0, 120_000, 250)
    const records = await handled(file)
    expect(records).toHaveLength(1502)
    const accounts = new Set((await db.sql`select id::int from outbox where entity_type = 'account'`).map((row) => row.id as number))
    const barriers = records.filter((r) => r.entity === '')
    expect(barriers).toHaveLength(2)
    for (const barrier of barriers) {
      for (const r of records.filter((r) => accounts.has(r.id) && r.id !== barrier.id)) {
        if (r.id < barrier.id) expect(r.end).toBeLessThanOrEqual(barrier.start)
        else expect(r.start).toBeGreaterThanOrEqual(barrier.end)
      }
    }
  })

  it('a failing event holds back only its own entity; after it is dead, its entity continues (or waits under block)', async () => {
    const file = join(directory, 'hold.log')
    await db.sql`insert into outbox (event_type, entity_type, entity_id, payload)
                 select 'account.updated', 'account', e::text, jsonb_build_object('round', r) from generate_series(1, 3) r, generate_series(1, 3) e order by r, e`
    const [first] = await db.sql`select id from outbox where entity_id = '2' order by id limit 1`
    await db.sql`update outbox set payload = '{"poison": true}' where id = ${first!.id}`
    // a handler that fails the one poisoned event every time
    const poisonHandler = join(directory, 'poison.mjs')
    await (await import('node:fs/promises')).writeFile(poisonHandler, `import { appendFileSync } from 'node:fs'
export default (event) => { if (event.payload.poison) throw new Error('poison'); appendFileSync(process.env.RECORD_FILE, event.entity_id + ' ' + event.id + ' 0 0\\n') }`)
    replicas.push(startReplica(['--handlers', poisonHandler, '--ordering', 'entity', '--ordering-on-dead', 'block', '--max-attempts', '3', '--retry-delay', '20ms', '--retry-delay-max', '50ms', '--interval-min', '10ms', '--interval-max', '100ms'], { DATABASE_URL: db.url, RECORD_FILE: file }))
    await waitFor('poison dead', async () => (await db.sql`select 1 from outbox where dead_at is not null`).length === 1, 30_000).catch((error) => {
      console.log(replicas.at(-1)!.output())
      throw error
    })
    await waitFor('other entities done', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is not null`)[0]!.n === 6, 30_000)
    // entity 2's later events wait behind the dead one
    expect((await db.sql`select count(*)::int as n from outbox where entity_id = '2' and processed_at is null and dead_at is null`)[0]!.n).toBe(2)
    expect((await handled(file)).filter((h) => h.entity === '2')).toHaveLength(0)
    const blocking = replicas.pop()!
    blocking.child.kill('SIGTERM')
    await blocking.exited
    // the same outbox switched (with every replica stopped) to continue: entity 2 flows again, in order
    await db.sql`delete from outbox_settings`
    replicas.push(startReplica(['--handlers', poisonHandler, '--ordering', 'entity', '--ordering-on-dead', 'continue', '--interval-min', '10ms', '--interval-max', '100ms'], { DATABASE_URL: db.url, RECORD_FILE: file }))
    await waitFor('entity 2 continued', async () => (await handled(file)).filter((h) => h.entity === '2').length === 2, 30_000)
    expect((await handled(file)).filter((h) => h.entity === '2').map((h) => h.id)).toEqual((await db.sql`select id::int from outbox where entity_id = '2' and dead_at is null order by id`).map((r) => r.id))
  })

  it('ordering is a property of the outbox: a replica started with another mode refuses, naming both', async () => {
    const file = join(directory, 'mode.log')
    replica(file, ['--ordering', 'entity'])
    await waitFor('mode recorded', async () => (await db.sql`select 1 from outbox_settings where name = 'ordering'`).length === 1, 20_000)
    const other = await runCli(['--handlers', fixturePath('ordered-handler.js'), '--ordering', 'none'], { DATABASE_URL: db.url, RECORD_FILE: file })
    expect(other.code).toBe(2)
    expect(other.stderr).toMatch(/this outbox runs with ordering "entity, on dead: continue" .* but this replica was started with "none"/)
    await db.sql`delete from outbox_settings`
  })

  it('two replicas recording the mode at the same moment: the second reads what the first recorded', async () => {
    const first = await db.sql.reserve()
    try {
      await first`begin`
      await first`insert into outbox_settings (name, value) values ('ordering', 'none')`
      const second = outboxCheckOrdering(db.sql, outboxTable('public', 'outbox'), { ordering: 'none', onDead: 'continue' })
      await waitFor('the second waiting for the first', async () => (await db.sql`select 1 from pg_stat_activity where wait_event_type = 'Lock' and query like '%outbox_settings%'`).length > 0)
      await first`commit`
      await expect(second).resolves.toBeUndefined()
    } finally {
      first.release()
    }
  })
})
