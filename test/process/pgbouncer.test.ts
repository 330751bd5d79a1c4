import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixturePath, runCli } from '../support/cli.js'
import { createTestDatabase } from '../support/database.js'
import { findPgBouncer, type PgBouncer, startPgBouncer } from '../support/pgbouncer.js'
import { idleTransactions, pendingEvents, processSuite } from '../support/process-suite.js'
import { waitFor } from '../support/wait-for.js'

// PgBouncer 1.18 (Debian's) in transaction mode: LISTEN lasts one statement, named prepared statements are
// lost between transactions, unknown startup parameters are refused, session advisory locks stay behind.
const binary = findPgBouncer()
if (binary === undefined) console.warn('pgbouncer not found (install the pgbouncer package): skipping the tests behind PgBouncer')

const suite = processSuite('pgbouncer')
let bouncer: PgBouncer | undefined
beforeAll(async () => {
  if (binary !== undefined) bouncer = await startPgBouncer(binary, suite.db.url)
})
afterAll(async () => {
  await bouncer?.stop()
})

const pooled = () => ({ DATABASE_URL: bouncer!.url })
const logLines = (output: string) => output.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, unknown>)

function replica(recordFile: string, args: string[] = [], env: Record<string, string> = {}) {
  return suite.start(['--handlers', fixturePath('record-handler.js'), '--interval-min', '20ms', '--interval-max', '200ms', ...args], { RECORD_FILE: recordFile, ...pooled(), ...env })
}

async function recorded(file: string): Promise<Array<{ id: string; pid: string }>> {
  const text = await readFile(file, 'utf8').catch(() => '')
  return text.split('\n').filter(Boolean).map((line) => {
    const [id, , , pid] = line.split(' ')
    return { id: id!, pid: pid! }
  })
}

describe.skipIf(binary === undefined)('behind PgBouncer in transaction mode', () => {
  it('three replicas drain 10,000 events through PgBouncer, each exactly once: LISTEN on --listen-url, --no-listen, and one that finds NOTIFY does not reach it', async () => {
    const file = join(suite.directory, 'three.log')
    const direct = replica(file, ['--listen-url', suite.db.url])
    const polling = replica(file, ['--no-listen'])
    const unaware = replica(file)
    for (const r of [direct, polling, unaware]) await waitFor('the replica polling', () => logLines(r.output()).some((line) => line.msg === 'poller started'))
    await suite.db.sql`insert into items select n, 'item ' || n from generate_series(1, 10000) n`
    await waitFor('the outbox drained', async () => (await pendingEvents(suite.db)) === 0, 60_000, 100)
    const handled = await recorded(file)
    expect(handled).toHaveLength(10_000)
    expect(new Set(handled.map((h) => h.id)).size).toBe(10_000)
    expect(new Set(handled.map((h) => h.pid)).size).toBe(3)
    for (const r of [direct, polling, unaware]) {
      const messages = logLines(r.output()).map((line) => line.msg)
      expect(messages).toContain('connected through a connection pooler: no named prepared statements, no server keepalive settings (set the pooler\'s)')
      expect(messages).not.toContain('batch failed and rolled back')
    }
    const notifyLost = (r: typeof direct) => logLines(r.output()).some((line) => String(line.msg).startsWith('NOTIFY does not reach this poller'))
    expect(notifyLost(direct)).toBe(false)
    expect(notifyLost(polling)).toBe(false)
    expect(notifyLost(unaware)).toBe(true)
    expect(logLines(polling.output()).map((line) => line.msg)).toContain('not listening for NOTIFY: polling, a new event waits at most the longest poll interval')
    // the replica on --listen-url keeps the wake-up flag: a writer's NOTIFY wakes it
    await waitFor('the listening replica asleep', async () => (await suite.db.sql`select asleep from outbox_wakeup`)[0]?.asleep === true)
    await suite.db.sql`insert into items values (10001, 'late')`
    await waitFor('the late event handled', async () => (await pendingEvents(suite.db)) === 0)
    for (const r of [direct, polling, unaware]) r.child.kill('SIGTERM')
    for (const r of [direct, polling, unaware]) expect(await r.exited).toEqual({ code: 0, signal: null })
    expect(bouncer!.log()).not.toMatch(/unsupported startup parameter|prepared statement/i)
  })

  it('a replica killed mid-batch behind PgBouncer loses nothing: PgBouncer drops its server session, the batch rolls back and another replica takes it', async () => {
    const file = join(suite.directory, 'kill.log')
    await suite.db.sql`insert into items select n, 'item ' || n from generate_series(1, 300) n`
    const victim = replica(file, ['--no-supervise', '--batch-size', '100', '--concurrency', '4'], { HANDLER_DELAY_MS: '50' })
    await waitFor('the victim handling its batch', async () => (await recorded(file)).length > 5)
    victim.child.kill('SIGKILL')
    expect((await victim.exited).signal).toBe('SIGKILL')
    await waitFor('the victim transaction rolled back', async () => (await idleTransactions(suite.db)) === 0, 10_000)
    expect(await pendingEvents(suite.db)).toBeGreaterThan(0)
    replica(file)
    await waitFor('the outbox drained', async () => (await pendingEvents(suite.db)) === 0, 30_000, 100)
    expect(new Set((await recorded(file)).map((h) => h.id)).size).toBe(300)
    const [{ charged }] = await suite.db.sql`select count(*)::int as charged from outbox where attempts > 0`
    expect(charged).toBe(0)
  })

  it('the supervisor charges a dead worker\'s events through PgBouncer: the poison event is dead-lettered, its batch-mates handled', async () => {
    const file = join(suite.directory, 'poison.log')
    await suite.db.sql`insert into items select n, 'item ' || n from generate_series(1, 200) n`
    const r = suite.start(['--handlers', fixturePath('poison-handler.js'), '--max-attempts', '3', '--crash-limit', '2', '--batch-size', '50', '--interval-min', '20ms', '--interval-max', '200ms'], { RECORD_FILE: file, POISON_ENTITY_ID: '77', ...pooled() })
    await waitFor('the poison event dead-lettered', async () => (await suite.db.sql`select 1 from outbox where entity_id = '77' and dead_at is not null`).length > 0, 60_000, 100)
    await waitFor('everything else processed', async () => (await pendingEvents(suite.db)) === 0, 30_000, 100)
    const [poison] = await suite.db.sql`select attempts, last_error from outbox where entity_id = '77'`
    expect(poison!.attempts).toBe(3)
    expect(poison!.last_error).toMatch(/worker died \(exit code 1\) while handling this event/)
    const ids = new Set((await readFile(file, 'utf8')).split('\n').filter(Boolean).map((line) => line.split(' ')[0]))
    expect(ids.size).toBe(199)
    r.child.kill('SIGTERM')
    expect(await r.exited).toEqual({ code: 0, signal: null })
  })

  it('migrate (three at once), status, replay and cleanup work through PgBouncer', async () => {
    const fresh = await createTestDatabase({ migrate: false })
    try {
      const url = new URL(bouncer!.url)
      url.pathname = new URL(fresh.url).pathname
      const env = { DATABASE_URL: url.toString() }
      const results = await Promise.all([1, 2, 3].map(() => runCli(['migrate'], env)))
      expect(results.map((r) => [r.code, r.stderr])).toEqual([[0, ''], [0, ''], [0, '']])
      const files = (await readdir(new URL('../../sql/migrations/', import.meta.url))).filter((f) => f.endsWith('.sql'))
      expect(results.filter((r) => r.stdout.includes('applied to'))).toHaveLength(1)
      const [{ count }] = await fresh.sql`select count(*)::int as count from outbox_poller_migration`
      expect(count).toBe(files.length)
      // no advisory lock left behind in any server session PgBouncer keeps
      expect(await fresh.sql`select 1 from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())`).toHaveLength(0)
      expect((await runCli(['migrate'], env)).stdout).toMatch(/is up to date/)

      await fresh.sql`insert into outbox (event_type, entity_type, entity_id, payload, processed_at) select 'x.done', 'x', n::text, '{}', now() - interval '2 days' from generate_series(1, 30) n`
      await fresh.sql`insert into outbox (event_type, entity_type, entity_id, payload, attempts, dead_at, last_error) select 'x.dead', 'x', n::text, '{}', 10, now(), 'boom' from generate_series(1, 5) n`
      const status = await runCli(['status', '--json'], env)
      expect(status.code).toBe(0)
      expect(JSON.parse(status.stdout)).toMatchObject({ dead: 5 })
      const replay = await runCli(['replay', '--dead'], env)
      expect([replay.code, replay.stderr]).toEqual([0, ''])
      const [{ pending }] = await fresh.sql`select count(*)::int as pending from outbox where processed_at is null and dead_at is null`
      expect(pending).toBe(5)
      const cleanup = await runCli(['cleanup', '--older-than', '1d'], env)
      expect([cleanup.code, cleanup.stderr]).toEqual([0, ''])
      const [{ left }] = await fresh.sql`select count(*)::int as left from outbox`
      expect(left).toBe(5)
    } finally {
      await fresh.drop()
    }
  })
})

describe('listen options', () => {
  it('a bad --listen-url or OUTBOX_POLLER_LISTEN stops the run with one line naming it, exit 2', async () => {
    const handlers = ['--handlers', fixturePath('record-handler.js')]
    const badUrl = await runCli([...handlers, '--listen-url', 'mysql://db/app'], { DATABASE_URL: suite.db.url })
    expect([badUrl.code, badUrl.stderr]).toEqual([2, 'outbox-poller: --listen-url must be a postgres:// or postgresql:// URL (got mysql://…)\n'])
    const fromEnv = await runCli(handlers, { DATABASE_URL: suite.db.url, OUTBOX_POLLER_LISTEN_URL: 'postgres://u:secret@db:99999/app' })
    expect([fromEnv.code, fromEnv.stderr]).toEqual([2, 'outbox-poller: OUTBOX_POLLER_LISTEN_URL has port 99999: a port is between 1 and 65535\n'])
    const badListen = await runCli(handlers, { DATABASE_URL: suite.db.url, OUTBOX_POLLER_LISTEN: 'maybe' })
    expect([badListen.code, badListen.stderr]).toEqual([2, 'outbox-poller: OUTBOX_POLLER_LISTEN must be true or false (got "maybe")\n'])
  })
})
