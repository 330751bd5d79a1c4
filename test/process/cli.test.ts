import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixturePath, runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
})
afterAll(async () => {
  await db.drop()
})

/** A user mistake: exit 2, one line on stderr naming the problem, no stack trace. */
function expectUsageError(result: { code: number | null; stderr: string }, message: string | RegExp) {
  expect(result.code).toBe(2)
  expect(result.stderr).toMatch(message)
  expect(result.stderr).not.toMatch(/\n\s+at /)
}

describe('migrate', () => {
  it('three replicas migrating at once create the outbox once; later runs are no-ops', async () => {
    const results = await Promise.all([1, 2, 3].map(() => runCli(['migrate'], { DATABASE_URL: db.url })))
    expect(results.map((r) => r.code)).toEqual([0, 0, 0])
    const files = (await readdir(new URL('../../sql/migrations/', import.meta.url))).filter((f) => f.endsWith('.sql')).sort()
    const applied = `applied to "public"."outbox": ${files.map((f) => f.replace('.sql', '')).join(', ')}`
    expect(results.filter((r) => r.stdout.includes(applied))).toHaveLength(1)
    const again = await runCli(['migrate'], { DATABASE_URL: db.url })
    expect(again.stdout).toMatch(/is up to date/)
    const [{ count }] = await db.sql`select count(*)::int as count from outbox_poller_migration`
    expect(count).toBe(files.length)
  })

  it("the seed's monitoring queries run unchanged", async () => {
    await db.sql`insert into outbox (event_type, entity_type, entity_id, payload, processed_at) values ('issue.created', 'issue', '1', '{}', now()), ('issue.updated', 'issue', '1', '{}', null)`
    await db.sql`SELECT COUNT(*) FROM outbox WHERE processed_at IS NULL`
    await db.sql`SELECT event_type, COUNT(*) FROM outbox WHERE processed_at IS NULL GROUP BY event_type`
    await db.sql`SELECT DATE_TRUNC('minute', processed_at) as minute, COUNT(*) as processed_count FROM outbox WHERE processed_at > NOW() - INTERVAL '1 hour' GROUP BY minute ORDER BY minute`
    await db.sql`SELECT event_type, AVG(EXTRACT(EPOCH FROM (processed_at - created_at))) as avg_seconds FROM outbox WHERE processed_at IS NOT NULL GROUP BY event_type`
    const depth = await db.sql`SELECT DATE_TRUNC('hour', created_at) as hour, COUNT(*) as events_created, COUNT(processed_at) as events_processed, COUNT(*) - COUNT(processed_at) as queue_depth FROM outbox WHERE created_at > NOW() - INTERVAL '24 hours' GROUP BY hour ORDER BY hour`
    expect(Number(depth[0]!.queue_depth)).toBe(1)
    await db.sql`SELECT schemaname, relname, indexrelname, idx_scan, idx_tup_read, idx_tup_fetch FROM pg_stat_user_indexes WHERE relname = 'outbox' ORDER BY idx_scan DESC`
    await db.sql`delete from outbox`
  })
})

describe('capture commands', () => {
  it('capture, captures and uncapture work on a real table; a missing table is a clear error', async () => {
    await db.sql`create table if not exists tickets (id int primary key, title text, updated_at timestamptz)`
    const env = { DATABASE_URL: db.url }
    const captured = await runCli(['capture', 'tickets', '--entity', 'ticket', '--ignore-columns', 'updated_at'], env)
    expect(captured.code).toBe(0)
    expect(captured.stdout).toMatch(/capturing tickets as ticket.created\|updated\|deleted\|truncated \(key id; ignoring updated_at\) by statement/)
    const list = await runCli(['captures', '--json'], env)
    expect(JSON.parse(list.stdout)).toEqual([{ table: 'tickets', entity: 'ticket', key: 'id', ignoreColumns: ['updated_at'], columns: [], excludeColumns: [], softDeleteColumn: null, events: ['insert', 'update', 'delete', 'truncate'], mode: 'statement', groupBy: null }])
    expectUsageError(await runCli(['capture', 'missing_table', '--entity', 'x'], env), /^outbox-poller: table missing_table does not exist\n$/)
    expectUsageError(await runCli(['capture', 'tickets'], env), /required option '--entity <name>' not specified/)
    expect((await runCli(['uncapture', 'tickets'], env)).stdout).toMatch(/no longer capturing tickets/)
    expect((await runCli(['captures'], env)).stdout).toMatch(/no table is captured/)
  })
})

describe('bad input', () => {
  const handlers = ['--handlers', fixturePath('record-handler.js')]

  it('rejects invalid flag values with one line naming the option and the range', async () => {
    const env = { DATABASE_URL: db.url }
    expectUsageError(await runCli([...handlers, '--batch-size', '0'], env), /^outbox-poller: --batch-size must be an integer between 1 and 10000 \(got "0"\)\n$/)
    expectUsageError(await runCli([...handlers, '--interval-min', 'abc'], env), /--interval-min must be a duration/)
    expectUsageError(await runCli([...handlers, '--interval-min', '5', '--interval-max', '1'], env), /--interval-min \(5000 ms\) must not exceed --interval-max \(1000 ms\)/)
    expectUsageError(await runCli([...handlers, '--memory-limit', '1'], env), /--memory-limit must be an integer between 16 and 1048576/)
    expectUsageError(await runCli([...handlers, '--unmatched', 'drop'], env), /--unmatched must be one of process, hold/)
    expectUsageError(await runCli([...handlers, '--tx-mode', 'savepoint'], env), /^outbox-poller: --tx-mode must be one of event, batch \(got "savepoint"\)\n$/)
  })

  it('names the environment variable when the bad value came from it', async () => {
    expectUsageError(await runCli(handlers, { DATABASE_URL: db.url, OUTBOX_POLLER_BATCH_SIZE: '-5' }), /OUTBOX_POLLER_BATCH_SIZE must be an integer between 1 and 10000 \(got "-5"\)/)
    expectUsageError(await runCli(handlers, { DATABASE_URL: db.url, OUTBOX_POLLER_INTERVAL_MAX: '1x' }), /OUTBOX_POLLER_INTERVAL_MAX must be a duration/)
  })

  it('rejects an unknown option or command with exit code 2', async () => {
    const unknown = await runCli(['--batch-sise', '5'], { DATABASE_URL: db.url })
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toMatch(/unknown option '--batch-sise'/)
    expect((await runCli(['frobnicate'], {})).code).toBe(2)
  })

  it('explains a missing database URL or handler module', async () => {
    expectUsageError(await runCli(handlers, {}), /no database: set DATABASE_URL/)
    expectUsageError(await runCli([], { DATABASE_URL: db.url }), /no handlers: pass --handlers/)
    expectUsageError(await runCli(['--handlers', './nowhere.js'], { DATABASE_URL: db.url }), /handler module \.\/nowhere\.js not found/)
    expectUsageError(await runCli(['--handlers', fixturePath('broken-import.js')], { DATABASE_URL: db.url }), /failed to load: .*does-not-exist/)
    expectUsageError(await runCli(['--handlers', fixturePath('not-a-handler.js')], { DATABASE_URL: db.url }), /must be a function or an object of event-type patterns/)
  })

  it('an outbox that was never migrated is a clear error before anything is claimed', async () => {
    expectUsageError(await runCli([...handlers, '--table', 'no_such_outbox'], { DATABASE_URL: db.url }), /outbox table "public"."no_such_outbox" does not exist: run `outbox-poller migrate` first/)
  })

  it('an unreachable database is retried for --connect-timeout, then named by host and port, never the password', async () => {
    const started = Date.now()
    const result = await runCli([...handlers, '--connect-timeout', '1.5s'], { DATABASE_URL: 'postgres://app:s3cret@127.0.0.1:1/app' })
    expect(result.code).toBe(1)
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000)
    expect(result.stderr).toMatch(/cannot connect to 127\.0\.0\.1:1\/app: .*ECONNREFUSED.*gave up after 2 s/)
    expect(result.stdout + result.stderr).not.toContain('s3cret')
    expect(result.stdout).toMatch(/database unreachable, retrying/)
  })

  it('--sink-secret-file gives a webhook sink its secret; a file that cannot be read is named as given', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'outbox-cli-secret-'))
    try {
      const file = join(directory, 'webhook.secret')
      await writeFile(file, 'whsec_dGhlIHNlY3JldCBvZiBhIHRlc3Q=\n')
      const sink = ['--sink', 'http://127.0.0.1:9/hook', '--no-supervise', '--table', 'no_such_outbox']
      // with the secret read, the run gets past the sink to the outbox check
      expectUsageError(await runCli([...sink, '--sink-secret-file', file], { DATABASE_URL: db.url }), /outbox table "public"."no_such_outbox" does not exist/)
      expectUsageError(await runCli(sink, { DATABASE_URL: db.url, OUTBOX_POLLER_SINK_SECRET_FILE: file }), /outbox table "public"."no_such_outbox" does not exist/)
      expectUsageError(await runCli([...sink, '--sink-secret-file', join(directory, 'missing')], { DATABASE_URL: db.url }), /^outbox-poller: --sink-secret-file \S+missing cannot be read: ENOENT/)
      expectUsageError(await runCli(sink, { DATABASE_URL: db.url, OUTBOX_POLLER_SINK_SECRET_FILE: join(directory, 'missing') }), /^outbox-poller: OUTBOX_POLLER_SINK_SECRET_FILE \S+missing cannot be read/)
    } finally {
      await rm(directory, { recursive: true, force: true })
    }
  })

  it('--help documents every option with its default and environment variable', async () => {
    const help = await runCli(['run', '--help'])
    expect(help.code).toBe(0)
    for (const text of ['--batch-size <n>', '(default: 250)', 'OUTBOX_POLLER_BATCH_SIZE', 'OUTBOX_POLLER_INTERVAL_MIN', 'OUTBOX_POLLER_MEMORY_LIMIT_MB', 'OUTBOX_POLLER_MEMORY_CHECK_INTERVAL', 'DATABASE_URL', '--handler-timeout', '--max-attempts', '--sink-secret-file <path>', 'OUTBOX_POLLER_SINK_SECRET_FILE']) {
      expect(help.stdout).toContain(text)
    }
  })
})
