import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { fixturePath, killReplicas, type Replica, startReplica } from '../support/cli.js'
import { createItemsTable, createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

let db: TestDatabase
let directory: string
const replicas: Replica[] = []

beforeAll(async () => {
  db = await createTestDatabase()
  directory = await mkdtemp(join(tmpdir(), 'outbox-replicas-'))
  await createItemsTable(db)
})
afterEach(async () => {
  await killReplicas(replicas)
  await db.sql`truncate items, outbox`
})
afterAll(async () => {
  await db.drop()
  await rm(directory, { recursive: true, force: true })
})

function replica(recordFile: string, extraArgs: string[] = [], env: Record<string, string> = {}): Replica {
  const started = startReplica(['--handlers', fixturePath('record-handler.js'), '--interval-min', '20ms', '--interval-max', '200ms', '--log-level', 'info', ...extraArgs], {
    DATABASE_URL: db.url,
    RECORD_FILE: recordFile,
    ...env,
  })
  replicas.push(started)
  return started
}

async function recorded(file: string): Promise<Array<{ id: string; pid: string }>> {
  const text = await readFile(file, 'utf8').catch(() => '')
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id, , , pid] = line.split(' ')
      return { id: id!, pid: pid! }
    })
}

async function pendingCount(): Promise<number> {
  const [row] = await db.sql`SELECT COUNT(*)::int AS count FROM outbox WHERE processed_at IS NULL`
  return row!.count
}

describe('replica processes', () => {
  it('three replicas drain 20,000 events, each handled exactly once', async () => {
    const file = join(directory, 'three.log')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 20000) n`
    const started = [replica(file), replica(file), replica(file)]
    await waitFor('the outbox drained', async () => (await pendingCount()) === 0, 60_000, 100)
    const handled = await recorded(file)
    const ids = handled.map((h) => h.id)
    expect(ids).toHaveLength(20_000)
    expect(new Set(ids).size).toBe(20_000)
    // all three took part
    expect(new Set(handled.map((h) => h.pid)).size).toBe(3)
    for (const r of started) r.child.kill('SIGTERM')
    for (const r of started) expect(await r.exited).toEqual({ code: 0, signal: null })
  })

  it('a replica killed with SIGKILL mid-batch loses nothing: its batch goes to another replica', async () => {
    const file = join(directory, 'kill.log')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 300) n`
    // slow handlers keep the victim's batch in flight when it dies
    const victim = replica(file, ['--batch-size', '100', '--concurrency', '4'], { HANDLER_DELAY_MS: '50' })
    await waitFor('the victim handling its batch', async () => (await recorded(file)).length > 5)
    victim.child.kill('SIGKILL')
    expect((await victim.exited).signal).toBe('SIGKILL')
    // the server notices the closed socket and rolls the victim's transaction back within moments
    await waitFor('the victim transaction rolled back', async () => (await db.sql`select 1 from pg_stat_activity where datname = current_database() and state = 'idle in transaction'`).length === 0, 5_000)
    expect(await pendingCount()).toBeGreaterThan(0)
    replica(file)
    await waitFor('the outbox drained', async () => (await pendingCount()) === 0, 30_000, 100)
    const ids = new Set((await recorded(file)).map((h) => h.id))
    expect(ids.size).toBe(300) // every event handled (some of the victim's twice: at-least-once)
    const [{ charged }] = await db.sql`select count(*)::int as charged from outbox where attempts > 0`
    expect(charged).toBe(0)
  })

  it('SIGTERM finishes and commits the batch in hand, then exits 0', async () => {
    const file = join(directory, 'term.log')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 40) n`
    const r = replica(file, ['--batch-size', '40', '--concurrency', '2'], { HANDLER_DELAY_MS: '50' })
    await waitFor('a batch in flight', async () => (await recorded(file)).length > 0)
    r.child.kill('SIGTERM')
    expect(await r.exited).toEqual({ code: 0, signal: null })
    expect(await pendingCount()).toBe(0)
    expect((await recorded(file)).length).toBe(40)
    expect(r.output()).toMatch(/"msg":"poller stopped"/)
  })

  it('a second SIGTERM forces the stop: the batch rolls back with no attempt charged', async () => {
    const file = join(directory, 'force.log')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 20) n`
    const r = replica(file, ['--batch-size', '20', '--concurrency', '1'], { HANDLER_DELAY_MS: '1000' })
    await waitFor('a batch in flight', async () => (await db.sql`select 1 from pg_stat_activity where datname = current_database() and state = 'idle in transaction'`).length > 0)
    r.child.kill('SIGTERM')
    await waitFor('first signal logged', () => r.output().includes('finishing the batch in hand'))
    r.child.kill('SIGTERM')
    const exit = await r.exited
    expect(exit.code).toBe(0)
    expect(await pendingCount()).toBe(20)
    const [{ charged }] = await db.sql`select count(*)::int as charged from outbox where attempts > 0`
    expect(charged).toBe(0)
  })
})
