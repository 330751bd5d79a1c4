import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { fixturePath, killReplicas, type Replica, startReplica } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { countStatements } from '../support/statement-counter.js'
import { createTenantsFromTemplate } from '../support/tenant-template.js'
import { tenantName } from '../support/tenants.js'
import { waitFor } from '../support/wait-for.js'

// 500 tenant schemas built from a template, served by replicas started with --schemas 'tenant_*'.
const tenants = Array.from({ length: 500 }, (_, i) => tenantName(i + 1))
let db: TestDatabase
let directory: string
const replicas: Replica[] = []

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  directory = await mkdtemp(join(tmpdir(), 'outbox-tenants-'))
  await createTenantsFromTemplate(db.sql, db.url, tenants)
}, 900_000)
afterEach(async () => {
  await killReplicas(replicas)
  // DELETE, not TRUNCATE: a thousand truncates (a new file each) take minutes on a loaded machine. The orders
  // first: deleting them is captured (order.deleted), and those events must not be the next test's backlog.
  // Each test also counts only its own entities (its own order ids), whatever an earlier one left.
  await db.sql.unsafe(`do $$ declare s name; begin
    for s in select nspname from pg_namespace where nspname like 'tenant\\_%' loop execute format('delete from %I.orders; delete from %I.outbox', s, s); end loop; end $$`)
}, 600_000)
afterAll(async () => {
  await db?.drop()
  if (directory !== undefined) await rm(directory, { recursive: true, force: true })
})

function replica(args: string[], env: Record<string, string>): Replica {
  const started = startReplica(['run', '--schemas', 'tenant_*', '--handlers', fixturePath('tenant-handler.js'), '--interval-max', '1s', ...args], { DATABASE_URL: db.url, ...env })
  replicas.push(started)
  return started
}

/** Orders `from` … `from + n - 1` in every tenant (one transaction), so each outbox gets `n` events. */
async function writeEverywhere(n: number, from: number): Promise<void> {
  await db.sql.unsafe(`do $$ declare s name; begin
    for s in select nspname from pg_namespace where nspname like 'tenant\\_%' loop
      execute format('insert into %I.orders (id, note) select g, ''order'' from generate_series(${from}, ${from + n - 1}) g', s);
    end loop; end $$`)
}

/** A test's own entities: the order ids `from` … `to`. */
type Entities = readonly [from: number, to: number]

/** What the handler recorded for the test's own entities. */
async function records(file: string, [from, to]: Entities): Promise<Array<{ schema: string; id: string; attempt: number; pid: number }>> {
  const text = await readFile(file, 'utf8').catch(() => '')
  return text.split('\n').filter(Boolean).map((line) => {
    const [schema, id, attempt, pid, entity] = line.split(' ')
    return { schema: schema!, id: id!, attempt: Number(attempt), pid: Number(pid), entity: Number(entity) }
  }).filter((event) => event.entity >= from && event.entity <= to)
}

/** A count over every tenant's outbox, of the test's own entities: one query, a union of each tenant's count. */
async function countEverywhere(where: string, [from, to]: Entities, schemas: readonly string[] = tenants): Promise<number> {
  const counts = schemas.map((schema) => `select count(*) as n from "${schema}".outbox where entity_id::int between ${from} and ${to} and ${where}`).join(' union all ')
  return (await db.sql.unsafe<Array<{ n: number }>>(`select coalesce(sum(n), 0)::int as n from (${counts}) as c`))[0]!.n
}

const pendingEverywhere = (own: Entities) => countEverywhere('processed_at is null and dead_at is null', own)

async function pollerConnections(): Promise<number> {
  const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name like 'outbox-poller/%'`
  return row!.n
}

describe('one replica set for 500 tenants', () => {
  it('one replica handles every event of every tenant exactly once, on at most 2 connections', async () => {
    const file = join(directory, 'all.log')
    const own = [1, 3] as const
    replica([], { RECORD_FILE: file })
    await waitFor('the replica polling', async () => (await pollerConnections()) >= 2, 60_000, 100)
    await writeEverywhere(3, 1)
    let most = 0
    await waitFor('every tenant drained', async () => {
      most = Math.max(most, await pollerConnections())
      return (await pendingEverywhere(own)) === 0
    }, 240_000, 250)
    const handled = await records(file, own)
    expect(handled).toHaveLength(1500)
    expect(new Set(handled.map((event) => `${event.schema}/${event.id}`)).size).toBe(1500)
    expect(new Set(handled.map((event) => event.schema)).size).toBe(500)
    expect(most).toBeLessThanOrEqual(2)
    expect(await pollerConnections()).toBeLessThanOrEqual(2)
  }, 300_000)

  it('500 idle tenants cost no more than one statement per tenant per --interval-max, counted on the wire', async () => {
    const counter = await countStatements(db.url)
    try {
      replicas.push(startReplica(['run', '--schemas', 'tenant_*', '--handlers', fixturePath('tenant-handler.js'), '--interval-max', '1s'], { DATABASE_URL: counter.url, RECORD_FILE: '/dev/null' }))
      await waitFor('the replica polling', async () => (await pollerConnections()) >= 2, 60_000, 100)
      // settled: each tenant's first turns (a claim, the flag raised, one more look) over, which takes a while on a
      // loaded machine: a second with no more statements than a safety poll and a discovery issue
      let settled = counter.statements
      await waitFor('the first turns over', async () => {
        const before = settled
        await new Promise((resolve) => setTimeout(resolve, 1000))
        settled = counter.statements
        return settled - before <= 10
      }, 180_000, 0)
      const from = counter.statements
      await new Promise((resolve) => setTimeout(resolve, 10_000))
      const statements = counter.statements - from
      // 10 intervals of 1 s, 11 safety polls at most: the bound is 500 × 11; a poll is one statement per 50 tenants
      // (10), and a discovery (every 30 s) a few more
      expect(statements).toBeLessThanOrEqual(500 * 11)
      expect(statements).toBeLessThanOrEqual(10 * 11 + 10)
      expect(statements).toBeGreaterThan(0)
    } finally {
      await killReplicas(replicas)
      await counter.close()
    }
  }, 300_000)

  it('a hot tenant with a 200,000-event backlog does not hold back the 499 cold ones', async () => {
    const file = join(directory, 'hot.log')
    const own = [10_001, 300_000] as const // hot 10,001 … 210,000; cold 300,000
    await db.sql`insert into tenant_0001.orders (id, note) select g, 'hot' from generate_series(10001, 210000) g`
    replica(['--no-supervise'], { RECORD_FILE: file, HANDLER_DELAY_MS: '1' })
    await waitFor('the hot backlog draining', async () => (await db.sql`select count(*)::int as n from tenant_0001.outbox where processed_at is not null`)[0]!.n > 0, 60_000, 100)
    await db.sql.unsafe(`do $$ declare s name; begin
      for s in select nspname from pg_namespace where nspname like 'tenant\\_%' and nspname <> 'tenant_0001' loop
        execute format('insert into %I.orders (id, note) values (300000, ''cold'')', s);
      end loop; end $$`)
    await waitFor('every cold event handled', async () => new Set((await records(file, own)).filter((event) => event.schema !== 'tenant_0001').map((event) => event.schema)).size === 499, 120_000, 200)
    const [{ pending }] = await db.sql`select count(*)::int as pending from tenant_0001.outbox where processed_at is null`
    expect(pending).toBeGreaterThan(100_000)
  }, 300_000)

  it('three replicas: no event handled twice, and a killed replica\'s events are reclaimed by the others', async () => {
    const file = join(directory, 'three.log')
    const own = [400_001, 400_010] as const
    const env = { RECORD_FILE: file, HANDLER_DELAY_MS: '2' }
    const flags = ['--no-supervise', '--batch-size', '20']
    const [killed] = [replica(flags, env), replica(flags, env), replica(flags, env)]
    await waitFor('three replicas polling', async () => (await pollerConnections()) >= 6, 60_000, 100)
    await writeEverywhere(10, 400_001)
    // the victim busy with the test's events (the others may take the first thousand alone on a loaded machine)
    await waitFor('the victim handling events', async () => (await records(file, own)).some((event) => event.pid === killed!.child.pid), 120_000, 50)
    killed!.child.kill('SIGKILL') // mid-batch: its batch rolls back and its events go back to the queue
    await waitFor('every event handled', async () => (await pendingEverywhere(own)) === 0, 240_000, 250)
    const handled = await records(file, own)
    const byEvent = Map.groupBy(handled, (event) => `${event.schema}/${event.id}`)
    expect(byEvent.size).toBe(5000)
    // the live replicas never handled an event twice, nor one the other handled: only the killed replica's
    // uncommitted batch was handled again
    const live = handled.filter((event) => event.pid !== killed!.child.pid)
    expect(new Set(live.map((event) => `${event.schema}/${event.id}`)).size).toBe(live.length)
    expect(handled.length - live.length).toBeGreaterThan(0)
  }, 400_000)

  it('three supervised replicas: a poison event is isolated and dead-lettered in its own tenant, no other tenant charged', async () => {
    const file = join(directory, 'poison.log')
    const own = [500_001, 500_020] as const
    const env = { RECORD_FILE: file, POISON_SCHEMA: 'tenant_0042', POISON_ENTITY_ID: '500007' }
    const flags = ['--max-attempts', '3', '--crash-limit', '10', '--batch-size', '20']
    for (let i = 0; i < 3; i++) replica(flags, env)
    await waitFor('three replicas polling', async () => (await pollerConnections()) >= 6, 60_000, 100)
    const nearby = tenants.slice(37, 47) // tenant_0038 … tenant_0047
    for (const schema of nearby) await db.sql.unsafe(`insert into "${schema}".orders (id, note) select g, 'order' from generate_series(500001, 500020) g`)
    await waitFor('the poison event dead-lettered', async () => (await db.sql`select 1 from tenant_0042.outbox where entity_id = '500007' and dead_at is not null`).length > 0, 120_000, 200)
    await waitFor('every other event handled', async () => (await countEverywhere('processed_at is null and dead_at is null', own, nearby)) === 0, 120_000, 250)
    const [poison] = await db.sql`select attempts, last_error from tenant_0042.outbox where entity_id = '500007'`
    expect(poison).toMatchObject({ attempts: 3 })
    expect(poison!.last_error).toMatch(/worker died \(exit code 1\) while handling this event/)
    expect(await countEverywhere('attempts > 0 or dead_at is not null', own, nearby.filter((schema) => schema !== 'tenant_0042'))).toBe(0)
    expect(new Set((await records(file, own)).map((event) => `${event.schema}/${event.id}`)).size).toBe(199)
  }, 300_000)
})
