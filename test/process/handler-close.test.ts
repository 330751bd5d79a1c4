import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { fixturePath, killReplicas, type Replica, startReplica } from '../support/cli.js'
import { createItemsTable, createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

// A drain timeout far beyond every wait below: a worker that only ends when the supervisor or the poller
// gives up on it would fail these tests instead of passing late.
const drainTimeout = ['--drain-timeout', '300s']

let db: TestDatabase
let directory: string
const replicas: Replica[] = []

beforeAll(async () => {
  db = await createTestDatabase()
  directory = await mkdtemp(join(tmpdir(), 'outbox-handler-close-'))
  await createItemsTable(db)
})
afterEach(async () => {
  await killReplicas(replicas)
  for (const pid of orphans.splice(0)) if (alive(pid)) process.kill(pid, 'SIGKILL')
  await waitFor('no poller connections left', async () => (await db.sql`select 1 from pg_stat_activity where datname = current_database() and application_name like 'outbox-poller/%'`).length === 0, 15_000)
  await db.sql.unsafe('truncate items; truncate outbox') // the outbox last, on its own: a captured table's TRUNCATE writes its .truncated event
})
afterAll(async () => {
  await db.drop()
  await rm(directory, { recursive: true, force: true })
})

const orphans: number[] = []

function replica(handler: string, args: string[], env: Record<string, string>): Replica {
  const started = startReplica(['--handlers', fixturePath(handler), '--interval-min', '20ms', '--interval-max', '200ms', ...drainTimeout, ...args], { DATABASE_URL: db.url, ...env })
  replicas.push(started)
  return started
}

function files(name: string) {
  return { RECORD_FILE: join(directory, `${name}.log`), CLOSE_FILE: join(directory, `${name}.closed`) }
}

async function lines(file: string): Promise<string[]> {
  return (await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean)
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Waits for the replica's exit, failing long before --drain-timeout would end it. */
function exitOf(r: Replica) {
  return Promise.race([r.exited, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no exit yet; output:\n${r.output()}`)), 30_000).unref())])
}

const pending = async () => (await db.sql`select count(*)::int as count from outbox where processed_at is null and dead_at is null`)[0]!.count as number
const workerPids = (output: string) => [...output.matchAll(/"worker_pid":(\d+),"msg":"worker started"/g)].map((m) => Number(m[1]))

describe('a handler module that holds its own postgres pool', () => {
  it('supervised, one SIGTERM ends the worker at once: the batch commits, close() is called, exit 0', async () => {
    const f = files('supervised')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 30) n`
    const r = replica('pool-handler.js', ['--batch-size', '30', '--concurrency', '1'], { ...f, HANDLER_DELAY_MS: '30' })
    await waitFor('a batch in flight', async () => (await lines(f.RECORD_FILE)).length > 0)
    r.child.kill('SIGTERM')
    expect(await exitOf(r)).toEqual({ code: 0, signal: null })
    expect(await pending()).toBe(0)
    expect(await lines(f.RECORD_FILE)).toHaveLength(30)
    expect(await lines(f.CLOSE_FILE)).toEqual([`closed ${workerPids(r.output())[0]}`])
    expect(r.output()).not.toMatch(/rolls back|rolled back/)
  })

  it('--no-supervise, one SIGTERM is enough even when close() leaves the pool open: the batch commits, exit 0', async () => {
    const f = files('alone')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 30) n`
    const r = replica('pool-handler.js', ['--no-supervise', '--batch-size', '30', '--concurrency', '1'], { ...f, HANDLER_DELAY_MS: '30', CLOSE_LEAVES_POOL: '1' })
    await waitFor('a batch in flight', async () => (await lines(f.RECORD_FILE)).length > 0)
    r.child.kill('SIGTERM')
    expect(await exitOf(r)).toEqual({ code: 0, signal: null })
    expect(await pending()).toBe(0)
    expect(await lines(f.CLOSE_FILE)).toEqual([`closed ${r.child.pid}`])
    expect(r.output()).not.toMatch(/forcing stop/)
  })

  it('a CommonJS module closes its pool through Symbol.asyncDispose on module.exports, which is not taken for a pattern', async () => {
    const f = files('commonjs')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 5) n`
    const r = replica('pool-handler.cjs', ['--no-supervise'], f)
    await waitFor('the outbox drained', async () => (await pending()) === 0)
    r.child.kill('SIGTERM')
    expect(await exitOf(r)).toEqual({ code: 0, signal: null })
    expect(await lines(f.RECORD_FILE)).toHaveLength(5)
    expect(await lines(f.CLOSE_FILE)).toEqual([`closed ${r.child.pid}`])
  })

  it('a stopped worker killed at --drain-timeout after its batch committed is reported as such, not as rolled back', async () => {
    const f = files('hung-close')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 30) n`
    const r = replica('pool-handler.js', ['--batch-size', '30', '--concurrency', '1', '--drain-timeout', '3s'], { ...f, HANDLER_DELAY_MS: '10', CLOSE_HANGS: '1' })
    await waitFor('a batch in flight', async () => (await lines(f.RECORD_FILE)).length > 0)
    r.child.kill('SIGTERM')
    expect(await exitOf(r)).toEqual({ code: 0, signal: null })
    expect(await pending()).toBe(0)
    expect(r.output()).toMatch(/"msg":"worker did not exit within --drain-timeout: killing it; it had no batch in hand \(its last batch committed\)"/)
    expect(r.output()).not.toMatch(/rolls back|rolled back/)
  })

  it('after kill -9 of the supervisor, the orphaned worker finishes its batch, honours SIGTERM, closes the module and exits', async () => {
    const f = files('orphan')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 30) n`
    const r = replica('pool-handler.js', ['--batch-size', '30', '--concurrency', '1'], { ...f, HANDLER_DELAY_MS: '30', CLOSE_LEAVES_POOL: '1' })
    await waitFor('a batch in flight', async () => (await lines(f.RECORD_FILE)).length > 0)
    const worker = workerPids(r.output())[0]!
    orphans.push(worker)
    r.child.kill('SIGKILL')
    process.kill(worker, 'SIGTERM') // what a service manager's stop does next
    await waitFor('the orphaned worker gone', () => !alive(worker), 30_000)
    expect(await pending()).toBe(0)
    expect(await lines(f.RECORD_FILE)).toHaveLength(30)
    expect(await lines(f.CLOSE_FILE)).toEqual([`closed ${worker}`])
  })
})
