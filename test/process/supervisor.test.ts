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
  directory = await mkdtemp(join(tmpdir(), 'outbox-supervisor-'))
  await createItemsTable(db)
})
afterEach(async () => {
  await killReplicas(replicas)
  // a killed supervisor's worker exits by itself; wait for its connections to go
  await waitFor('no poller connections left', async () => (await db.sql`select 1 from pg_stat_activity where datname = current_database() and application_name like 'outbox-poller/%'`).length === 0, 15_000)
  await db.sql.unsafe('truncate items; truncate outbox') // the outbox last, on its own: a captured table's TRUNCATE writes its .truncated event
})
afterAll(async () => {
  await db.drop()
  await rm(directory, { recursive: true, force: true })
})

function supervised(handler: string, args: string[], env: Record<string, string>): Replica {
  const started = startReplica(['--handlers', fixturePath(handler), '--interval-min', '20ms', '--interval-max', '200ms', ...args], { DATABASE_URL: db.url, ...env })
  replicas.push(started)
  return started
}

async function recordedIds(file: string): Promise<string[]> {
  const text = await readFile(file, 'utf8').catch(() => '')
  return text.split('\n').filter(Boolean).map((line) => line.split(' ')[0]!)
}

const pending = async () => (await db.sql`SELECT COUNT(*)::int AS count FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL`)[0]!.count as number
const workerPids = (output: string) => [...output.matchAll(/"worker_pid":(\d+),"msg":"worker started"/g)].map((m) => Number(m[1]))
const logLines = (output: string) => output.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, unknown>)

describe('supervisor', () => {
  it('restarts a leaking worker over its memory limit; every event is handled exactly once; SIGTERM exits 0', async () => {
    const file = join(directory, 'leak.log')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 3000) n`
    // an idle worker is about 90 MB: 40 MB above that is some 80 leaky events per worker, dozens of restarts in all
    const r = supervised('leaky-handler.js', ['--memory-limit', '130', '--memory-check-interval', '0.2', '--batch-size', '50'], { RECORD_FILE: file, LEAK_KB: '512', HANDLER_DELAY_MS: '2' })
    await waitFor('the outbox drained', async () => (await pending()) === 0, 90_000, 200)
    const restarts = logLines(r.output()).filter((line) => line.msg === 'worker restarted' && line.reason === 'memory')
    expect(restarts.length).toBeGreaterThanOrEqual(2)
    expect(logLines(r.output()).some((line) => line.msg === 'worker over its memory limit: draining it and starting a fresh one' && typeof line.rss_mb === 'number')).toBe(true)
    // one supervisor throughout: every log line of the supervisor role has the same pid
    const supervisorPids = new Set(logLines(r.output()).filter((line) => line.role === 'supervisor').map((line) => line.pid))
    expect([...supervisorPids]).toEqual([r.child.pid])
    const ids = await recordedIds(file)
    expect(ids).toHaveLength(3000)
    expect(new Set(ids).size).toBe(3000)
    r.child.kill('SIGTERM')
    expect(await r.exited).toEqual({ code: 0, signal: null })
 }, 120_000) // its drain may take up to 90 s on a loaded machine

  it('isolates a poison event that kills its worker: it is dead-lettered, its batch-mates are handled, no crash loop', async () => {
    const file = join(directory, 'poison.log')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 200) n`
    const r = supervised('poison-handler.js', ['--max-attempts', '4', '--crash-limit', '2', '--batch-size', '50'], { RECORD_FILE: file, POISON_ENTITY_ID: '77' })
    await waitFor('the poison event dead-lettered', async () => (await db.sql`select 1 from outbox where entity_id = '77' and dead_at is not null`).length > 0, 60_000, 100)
    await waitFor('everything else processed', async () => (await pending()) === 0, 30_000, 100)
    const [poison] = await db.sql`select attempts, last_error, processed_at from outbox where entity_id = '77'`
    expect(poison).toMatchObject({ attempts: 4, processed_at: null })
    expect(poison!.last_error).toMatch(/worker died \(exit code 1\) while handling this event/)
    const ids = new Set(await recordedIds(file))
    expect(ids.size).toBe(199)
    expect(r.child.exitCode).toBeNull() // the supervisor is still running: isolation is not a crash loop
    r.child.kill('SIGTERM')
    expect(await r.exited).toEqual({ code: 0, signal: null })
  })

  it('after one crash only the events in flight are charged and marked suspect, not the whole batch; the rest and fresh events are handled normally', async () => {
    const file = join(directory, 'narrow.log')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 300) n`
    const r = supervised('poison-handler.js', ['--batch-size', '250', '--concurrency', '4', '--max-attempts', '2'], { RECORD_FILE: file, POISON_ENTITY_ID: '40', POISON_SIGNAL: 'SIGKILL', HANDLER_DELAY_MS: '20' })
    await waitFor('the first crash charged', () => logLines(r.output()).some((line) => line.msg === 'worker crashed'), 30_000)
    await db.sql`insert into items select n, 'item ' || n from generate_series(301, 350) n` // fresh events, after the crash
    await waitFor('the poison event dead-lettered', async () => (await db.sql`select 1 from outbox where entity_id = '40' and dead_at is not null`).length > 0, 60_000, 100)
    await waitFor('everything else processed', async () => (await pending()) === 0, 30_000, 100)
    // A crash charges only what the dead worker had announced and not finished: a few windows of
    // --concurrency events, never the whole batch of 250 (which would be claimed one at a time afterwards).
    const charged = await db.sql`select entity_id, attempts, suspect from outbox where attempts > 0 and entity_id <> '40'`
    expect(charged.length).toBeLessThanOrEqual(25)
    expect(charged.every((row) => row.attempts === 1)).toBe(true)
    expect(new Set(await recordedIds(file)).size).toBe(349)
    r.child.kill('SIGTERM')
    expect(await r.exited).toEqual({ code: 0, signal: null })
  })

  it('a memory restart never runs more than one draining worker beside the fresh one', async () => {
    const file = join(directory, 'one-retiree.log')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 1000) n`
    // each batch leaks 200 MB over about 6 s: a fresh worker passes the limit while its predecessor still drains
    const r = supervised('leaky-handler.js', ['--memory-limit', '100', '--memory-check-interval', '1s', '--batch-size', '200', '--concurrency', '8'], { RECORD_FILE: file, LEAK_KB: '1024', HANDLER_DELAY_MS: '250' })
    await waitFor('the outbox drained', async () => (await pending()) === 0, 120_000, 200)
    let alive = 0
    let most = 0
    for (const line of logLines(r.output())) {
      if (line.msg === 'worker started') most = Math.max(most, ++alive)
      else if (line.msg === 'worker exited') alive--
    }
    expect(logLines(r.output()).filter((line) => line.msg === 'worker restarted' && line.reason === 'memory').length).toBeGreaterThanOrEqual(2)
    expect(most).toBe(2)
    const ids = await recordedIds(file)
    expect(ids).toHaveLength(1000)
    expect(new Set(ids).size).toBe(1000)
    r.child.kill('SIGTERM')
    expect(await r.exited).toEqual({ code: 0, signal: null })
  }, 150_000)

  it('SIGTERM during a batch under the supervisor: the batch completes and commits, exit 0', async () => {
    const file = join(directory, 'term.log')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 30) n`
    const r = supervised('record-handler.js', ['--batch-size', '30', '--concurrency', '1'], { RECORD_FILE: file, HANDLER_DELAY_MS: '30' })
    await waitFor('a batch in flight', async () => (await recordedIds(file)).length > 0)
    r.child.kill('SIGTERM')
    expect(await r.exited).toEqual({ code: 0, signal: null })
    expect(await pending()).toBe(0)
    expect(await recordedIds(file)).toHaveLength(30)
    const [{ charged }] = await db.sql`select count(*)::int as charged from outbox where attempts > 0`
    expect(charged).toBe(0)
  })

  it('SIGTERM to the worker and the supervisor at once (systemd, Ctrl-C) drains: nothing is forced, no attempt charged', async () => {
    const file = join(directory, 'both.log')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 30) n`
    const r = supervised('record-handler.js', ['--batch-size', '30', '--concurrency', '1'], { RECORD_FILE: file, HANDLER_DELAY_MS: '30' })
    await waitFor('a batch in flight', async () => (await recordedIds(file)).length > 0)
    process.kill(workerPids(r.output())[0]!, 'SIGTERM')
    r.child.kill('SIGTERM')
    expect(await r.exited).toEqual({ code: 0, signal: null })
    expect(r.output()).not.toMatch(/forcing stop/)
    expect(await pending()).toBe(0)
    expect(await recordedIds(file)).toHaveLength(30)
  })

  it('a worker stopped by a SIGTERM of its own drains and is replaced, without counting as a crash', async () => {
    const file = join(directory, 'own-term.log')
    const r = supervised('record-handler.js', ['--crash-limit', '1'], { RECORD_FILE: file })
    await waitFor('a worker polling', () => logLines(r.output()).some((line) => line.msg === 'poller started'))
    process.kill(workerPids(r.output())[0]!, 'SIGTERM')
    await waitFor('a second worker', () => workerPids(r.output()).length >= 2, 10_000)
    // 'worker started' is logged before 'worker restarted': wait for the second line too, not just the pid
    await waitFor('the restart logged with reason signal', () => logLines(r.output()).some((line) => line.msg === 'worker restarted' && line.reason === 'signal'), 10_000)
    expect(r.output()).not.toMatch(/worker crashed|crash loop/)
    await db.sql`insert into items values (1, 'after the restart')`
    await waitFor('the new worker handles events', async () => (await pending()) === 0)
    r.child.kill('SIGTERM')
    expect(await r.exited).toEqual({ code: 0, signal: null })
  })

  it('SIGKILL of the worker: its batch rolls back and the next worker handles it', async () => {
    const file = join(directory, 'kill.log')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 100) n`
    const r = supervised('record-handler.js', ['--batch-size', '100', '--concurrency', '2'], { RECORD_FILE: file, HANDLER_DELAY_MS: '20' })
    await waitFor('a batch in flight', async () => (await recordedIds(file)).length > 0)
    process.kill(workerPids(r.output())[0]!, 'SIGKILL')
    await waitFor('a second worker', () => workerPids(r.output()).length >= 2, 10_000)
    await waitFor('the outbox drained', async () => (await pending()) === 0, 30_000, 100)
    expect(new Set(await recordedIds(file)).size).toBe(100)
    r.child.kill('SIGTERM')
    expect(await r.exited).toEqual({ code: 0, signal: null })
  })

  it('SIGHUP replaces the worker without losing an event', async () => {
    const file = join(directory, 'hup.log')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 500) n`
    const r = supervised('record-handler.js', ['--batch-size', '20', '--concurrency', '4'], { RECORD_FILE: file, HANDLER_DELAY_MS: '5' })
    await waitFor('handling started', async () => (await recordedIds(file)).length > 0)
    r.child.kill('SIGHUP')
    await waitFor('a second worker', () => workerPids(r.output()).length >= 2, 10_000)
    await waitFor('the outbox drained', async () => (await pending()) === 0, 30_000, 100)
    const ids = await recordedIds(file)
    expect(new Set(ids).size).toBe(500)
    expect(ids).toHaveLength(500)
    expect(logLines(r.output()).some((line) => line.msg === 'worker restarted' && line.reason === 'reload')).toBe(true)
    r.child.kill('SIGTERM')
    expect(await r.exited).toEqual({ code: 0, signal: null })
  })

  it('a worker whose supervisor disappears drains: its batch in flight commits, nothing is charged, and it exits by itself', async () => {
    const file = join(directory, 'orphan.log')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 30) n`
    const r = supervised('record-handler.js', ['--batch-size', '30', '--concurrency', '1'], { RECORD_FILE: file, HANDLER_DELAY_MS: '50' })
    await waitFor('a batch in flight', async () => (await recordedIds(file)).length > 0)
    const worker = workerPids(r.output())[0]!
    expect(await recordedIds(file)).not.toHaveLength(30) // still handling when the supervisor dies
    r.child.kill('SIGKILL')
    await waitFor('the orphaned worker gone', () => {
      try {
        process.kill(worker, 0)
        return false
      } catch {
        return true
      }
    }, 10_000)
    // the whole batch it had in hand was handled and committed, once, with no attempt charged
    expect(await pending()).toBe(0)
    expect(await recordedIds(file)).toHaveLength(30)
    const [{ charged }] = await db.sql`select count(*)::int as charged from outbox where attempts > 0`
    expect(charged).toBe(0)
  })

  it('--no-supervise: over the memory limit the worker drains and exits 75', async () => {
    const file = join(directory, 'alone.log')
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 400) n`
    // an idle worker alone is about 90 MB: the limit leaves room for some leaky events before the drain
    const r = supervised('leaky-handler.js', ['--no-supervise', '--memory-limit', '140', '--memory-check-interval', '0.1', '--batch-size', '10'], { RECORD_FILE: file, LEAK_KB: '1024' })
    const exit = await r.exited
    expect(exit.code).toBe(75)
    expect(r.output()).toMatch(/over the memory limit: draining, then exiting with code 75/)
    // the batch in hand was committed: every recorded event is processed
    const ids = await recordedIds(file)
    expect(ids.length).toBeGreaterThan(0)
    const [{ processed }] = await db.sql`select count(*)::int as processed from outbox where processed_at is not null`
    expect(processed).toBe(ids.length)
  })

  it('a worker whose supervisor is killed while the worker is still starting exits instead of polling unsupervised', async () => {
    const replica = supervised('slow-load-handler.js', [], { LOAD_MS: '3000' })
    const [worker] = await waitFor('the worker started', () => (workerPids(replica.output()).length > 0 ? workerPids(replica.output()) : undefined))
    replica.child.kill('SIGKILL') // before the worker has loaded its handlers and listens for the supervisor
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0)
        return true
      } catch {
        return false
      }
    }
    await waitFor('the orphaned worker gone', () => !alive(worker!), 20_000, 100)
    expect(replica.output()).toContain('the supervisor is gone: exiting before polling')
  })
})
