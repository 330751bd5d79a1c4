import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { fixturePath, killReplicas, type Replica, startReplica } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { createTenantsFromTemplate } from '../support/tenant-template.js'
import { tenantName } from '../support/tenants.js'
import { waitFor } from '../support/wait-for.js'

// Replicas started with --schemas over 20 tenants: the three-replica cases of test/scale/tenants.test.ts,
// small enough for every run.
const tenants = Array.from({ length: 20 }, (_, i) => tenantName(i + 1, 'tr_'))
let db: TestDatabase
let directory: string
const replicas: Replica[] = []

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  directory = await mkdtemp(join(tmpdir(), 'outbox-tenant-replicas-'))
  await createTenantsFromTemplate(db.sql, db.url, tenants)
})
afterEach(async () => {
  await killReplicas(replicas)
})
afterAll(async () => {
  await db?.drop()
  if (directory !== undefined) await rm(directory, { recursive: true, force: true })
})

function replica(args: string[], env: Record<string, string>): Replica {
  const started = startReplica(['run', '--schemas', 'tr_*', '--handlers', fixturePath('tenant-handler.js'), '--interval-max', '1s', ...args], { DATABASE_URL: db.url, ...env })
  replicas.push(started)
  return started
}

/** Orders `from` … `from + n - 1` in every tenant (one transaction): each outbox gets `n` events of those entities. */
async function writeEverywhere(n: number, from: number): Promise<void> {
  for (const schema of tenants) await db.sql.unsafe(`insert into "${schema}".orders (id, note) select g, 'order' from generate_series(${from}, ${from + n - 1}) g`)
}

/** What the handler recorded, only for the entities `from` … `to` (a test's own). */
async function records(file: string, from: number, to: number): Promise<Array<{ schema: string; id: string; pid: number }>> {
  const text = await readFile(file, 'utf8').catch(() => '')
  return text.split('\n').filter(Boolean).map((line) => {
    const [schema, id, , pid, entity] = line.split(' ')
    return { schema: schema!, id: id!, pid: Number(pid), entity: Number(entity) }
  }).filter((event) => event.entity >= from && event.entity <= to)
}

/** Events of the entities `from` … `to` not yet processed nor dead, over every tenant. */
async function pending(from: number, to: number, schemas: readonly string[] = tenants): Promise<number> {
  const counts = schemas.map((schema) => `select count(*) as n from "${schema}".outbox where processed_at is null and dead_at is null and entity_id::int between ${from} and ${to}`).join(' union all ')
  return (await db.sql.unsafe<Array<{ n: number }>>(`select coalesce(sum(n), 0)::int as n from (${counts}) as c`))[0]!.n
}

async function pollerConnections(): Promise<number> {
  const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name like 'outbox-poller/%'`
  return row!.n
}

describe('three replicas over 20 tenants', () => {
  it('a replica killed mid-batch: its events, a backlog\'s too, are reclaimed by the others; the live ones handle none twice', async () => {
    const file = join(directory, 'three.log')
    const env = { RECORD_FILE: file, HANDLER_DELAY_MS: '20' }
    const flags = ['--no-supervise', '--batch-size', '20']
    const [killed] = [replica(flags, env), replica(flags, env), replica(flags, env)]
    await waitFor('three replicas polling', async () => (await pollerConnections()) >= 6, 30_000, 100)
    await writeEverywhere(40, 1)
    await db.sql.unsafe(`insert into tr_0001.orders (id, note) select g, 'order' from generate_series(41, 1000) g`)
    // any of its events: with shared turns the victim may be busy with tr_0001's backlog (41 on), not with 1-40
    await waitFor('the victim handling a batch', async () => (await records(file, 1, 1000)).filter((event) => event.pid === killed!.child.pid).length > 5, 30_000, 20)
    killed!.child.kill('SIGKILL') // mid-batch: its batch rolls back, with no NOTIFY
    await killed!.exited
    await waitFor('every event handled', async () => (await pending(1, 1000)) === 0, 30_000, 100)
    const handled = await records(file, 1, 1000)
    expect(new Set(handled.map((event) => `${event.schema}/${event.id}`)).size).toBe(1760)
    const live = handled.filter((event) => event.pid !== killed!.child.pid)
    expect(new Set(live.map((event) => `${event.schema}/${event.id}`)).size).toBe(live.length)
    expect(handled.length - live.length).toBeGreaterThan(0)
  })

  it('supervised replicas: a poison event is isolated and dead-lettered in its own tenant, no other tenant charged', async () => {
    const file = join(directory, 'poison.log')
    const env = { RECORD_FILE: file, POISON_SCHEMA: 'tr_0005', POISON_ENTITY_ID: '2007' }
    const flags = ['--max-attempts', '3', '--crash-limit', '10', '--batch-size', '20']
    for (let i = 0; i < 3; i++) replica(flags, env)
    await waitFor('three replicas polling', async () => (await pollerConnections()) >= 6, 30_000, 100)
    await writeEverywhere(20, 2001)
    await waitFor('the poison event dead-lettered', async () => (await db.sql`select 1 from tr_0005.outbox where entity_id = '2007' and dead_at is not null`).length > 0, 60_000, 100)
    await waitFor('every other event handled', async () => (await pending(2001, 2020)) === 0, 30_000, 100)
    const [poison] = await db.sql`select attempts, last_error from tr_0005.outbox where entity_id = '2007'`
    expect(poison).toMatchObject({ attempts: 3 })
    expect(poison!.last_error).toMatch(/worker died \(exit code 1\) while handling this event/)
    const others = tenants.filter((schema) => schema !== 'tr_0005').map((schema) => `select count(*) as n from "${schema}".outbox where entity_id::int between 2001 and 2020 and (attempts > 0 or dead_at is not null)`)
    expect((await db.sql.unsafe(`select sum(n)::int as n from (${others.join(' union all ')}) as c`))[0]!.n).toBe(0)
    const seen = new Set((await records(file, 2001, 2020)).map((event) => `${event.schema}/${event.id}`))
    if (seen.size !== 399) {
      // name the events processed or dead without a record of their handling, with their state
      const all = tenants.map((schema) => `select '${schema}' as schema, id::text as id, entity_id, attempts, suspect, dead_at is not null as dead, processed_at is not null as processed, last_error from "${schema}".outbox where entity_id::int between 2001 and 2020`)
      const rows = await db.sql.unsafe<Array<{ schema: string; id: string }>>(all.join(' union all '))
      expect(rows.filter((row) => !seen.has(`${row.schema}/${row.id}`) && !(row.schema === 'tr_0005' && (row as { entity_id?: string }).entity_id === '2007'))).toEqual([])
    }
    expect(seen.size).toBe(399)
  })
})
