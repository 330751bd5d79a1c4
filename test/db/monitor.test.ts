import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { applicationName, connect } from '../../src/database/connect.js'
import { outboxDeadEvents } from '../../src/ops/dead.js'
import { outboxStatus } from '../../src/ops/monitor.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import type { Poller } from '../../src/poller/poller.js'
import { outboxReplay, outboxReplayCount } from '../../src/ops/replay.js'
import type { OutboxEvent } from '../../src/types.js'
import { type CliResult, runCli, startReplica } from '../support/cli.js'
import { pollerSuite } from '../support/poller-suite.js'
import { waitFor } from '../support/wait-for.js'

const { db, startPoller: startSuitePoller } = pollerSuite()
const outbox = outboxTable('public', 'outbox')

/** A hand-made outbox row; times are seconds relative to `at` (negative: in the past), absent: NULL. */
interface Fixture {
  type: string
  created: number
  processed?: number
  dead?: number
  retry?: number
  suspect?: boolean
  attempts?: number
  error?: string
}

async function databaseNow(): Promise<Date> {
  const [row] = await db.sql<{ now: Date }[]>`select now()`
  return row!.now
}

/** Inserts the fixtures in order and returns their ids. */
async function insert(at: Date, fixtures: Fixture[]): Promise<string[]> {
  const time = (seconds: number | undefined) => (seconds === undefined ? null : new Date(at.getTime() + seconds * 1000))
  const rows = fixtures.map((f, i) => ({
    event_type: f.type,
    entity_type: f.type.split('.')[0]!,
    entity_id: String(i + 1),
    payload: {},
    created_at: time(f.created),
    processed_at: time(f.processed),
    dead_at: time(f.dead),
    retry_at: time(f.retry),
    suspect: f.suspect ?? false,
    attempts: f.attempts ?? 0,
    last_error: f.error ?? null,
  }))
  const inserted = await db.sql<{ id: string }[]>`insert into outbox ${db.sql(rows)} returning id::text as id`
  return inserted.map((row) => row.id)
}

function startPoller(handle: (event: OutboxEvent) => void): Poller {
  return startSuitePoller({ handlers: handle })
}

async function rows() {
  return db.sql<{ id: string; event_type: string; processed: boolean; dead: boolean; retry_at: Date | null; attempts: number; last_error: string | null; suspect: boolean }[]>`
    select id::text as id, event_type, processed_at is not null as processed, dead_at is not null as dead, retry_at, attempts, last_error, suspect
      from outbox order by id`
}

const cli = (args: string[], env: Record<string, string> = {}): Promise<CliResult> => runCli(args, { DATABASE_URL: db.url, ...env })

/** A user mistake: exit 2, one line on stderr, no stack trace. */
function expectUsageError(result: CliResult, message: RegExp) {
  expect(result.code, result.stderr).toBe(2)
  expect(result.stderr.trimEnd()).toMatch(message)
  expect(result.stderr.trim().split('\n')).toHaveLength(1)
}

describe('status', () => {
  it('counts pending, due, retrying, suspect, dead, throughput, lag and latency as hand-counted', async () => {
    const at = await databaseNow()
    await insert(at, [
      // pending: 3 fresh, 2 retries due, 1 suspect due, 1 retry waiting (the oldest pending: 200 s)
      { type: 'issue.created', created: -30 },
      { type: 'issue.created', created: -20 },
      { type: 'issue.created', created: -10 },
      { type: 'issue.updated', created: -120, retry: -5, attempts: 1, error: 'Error: boom' },
      { type: 'issue.updated', created: -110, retry: -5, attempts: 1, error: 'Error: boom' },
      { type: 'order.created', created: -50, retry: -1, attempts: 1, suspect: true, error: 'worker died' },
      { type: 'issue.updated', created: -200, retry: 60, attempts: 2, error: 'Error: boom' },
      // dead: 2 issue.created, 1 order.created
      { type: 'issue.created', created: -4000, dead: -3000, retry: -3000, attempts: 10, error: 'TypeError: x' },
      { type: 'issue.created', created: -200, dead: -100, retry: -100, attempts: 10, error: 'TypeError: x' },
      { type: 'order.created', created: -20, dead: -10, retry: -10, attempts: 10, error: 'RangeError: y' },
      // processed in the last minute (latency 0.1, 0.2, 0.3 s) and 200 s ago (latency 1 s)
      { type: 'issue.created', created: -30.1, processed: -30 },
      { type: 'issue.created', created: -40.2, processed: -40 },
      { type: 'issue.created', created: -50.3, processed: -50 },
      { type: 'order.created', created: -201, processed: -200 },
      // processed 10 minutes ago (in the hour, not in the 5-minute window), and 2 hours ago (neither)
      { type: 'issue.updated', created: -610, processed: -600 },
      { type: 'issue.updated', created: -610, processed: -600 },
      { type: 'issue.updated', created: -610, processed: -600 },
      { type: 'issue.created', created: -7300, processed: -7200 },
      { type: 'issue.created', created: -7300, processed: -7200 },
    ])
    const status = await outboxStatus(db.sql, outbox, { now: at })
    expect(status).toMatchObject({ at, pending: 7, due: 6, retrying: 1, suspect: 1, dead: 3, processedLastMinute: 3, processedLastHour: 7 })
    expect(status.oldestPendingSeconds).toBeCloseTo(200, 3)
    // percentile_cont over [0.1, 0.2, 0.3, 1.0]: interpolated between neighbours
    expect(status.latency.p50).toBeCloseTo(0.25, 3)
    expect(status.latency.p95).toBeCloseTo(0.3 + 0.85 * 0.7, 3)
    expect(status.latency.p99).toBeCloseTo(0.3 + 0.97 * 0.7, 3)
    expect(status.types.map(({ p95, ...rest }) => rest)).toEqual([
      { eventType: 'issue.created', pending: 3, dead: 2, processedLastHour: 3 },
      { eventType: 'issue.updated', pending: 3, dead: 0, processedLastHour: 3 },
      { eventType: 'order.created', pending: 1, dead: 1, processedLastHour: 1 },
    ])
    expect(status.types.map((t) => t.p95)).toEqual([expect.closeTo(0.29, 3), null, expect.closeTo(1, 3)])
  })

  it('an empty outbox has no lag and no latency', async () => {
    const status = await outboxStatus(db.sql, outbox)
    expect(status).toMatchObject({ pending: 0, due: 0, dead: 0, oldestPendingSeconds: 0, latency: { p50: null, p95: null, p99: null }, types: [] })
  })

  it('lists the connected poller replicas by application name, its own connection excepted', async () => {
    const poller = startPoller(() => {})
    await poller.start()
    const sql = connect(db.url, { applicationName: applicationName('status') })
    try {
      const status = await outboxStatus(sql, outbox)
      const workers = status.replicas.filter((r) => r.role === 'worker')
      expect(workers.length).toBeGreaterThanOrEqual(1)
      expect(workers[0]!.applicationName).toBe(applicationName('worker'))
      expect(workers[0]!.state).toMatch(/idle|active/)
      expect(workers[0]!.since).toBeInstanceOf(Date)
      expect(status.replicas.some((r) => r.role === 'status')).toBe(false)
    } finally {
      await sql.end()
    }
  })

  it('status --max-lag exits 1 with a one-line reason on a stale queue, and 0 once a poller has drained it', async () => {
    await insert(await databaseNow(), [{ type: 'issue.created', created: -600 }])
    const stale = await cli(['status', '--max-lag', '1s'])
    expect(stale.code).toBe(1)
    expect(stale.stderr).toMatch(/^outbox-poller: lag 60\d s exceeds --max-lag 1 s\n$/)
    expect(stale.stdout).toMatch(/pending +1 +\(due now 1, waiting for retry 0, suspect 0\)/)

    await startPoller(() => {}).start()
    await waitFor('drained', async () => (await rows()).every((row) => row.processed))
    const fresh = await cli(['status', '--max-lag', '1s'])
    expect(fresh.code, fresh.stderr).toBe(0)
    expect(fresh.stderr).toBe('')
    expect(fresh.stdout).toMatch(/lag +0 s/)
    expect(fresh.stdout).toMatch(/outbox-poller\/[^ ]+\/\d+\/worker +\d+ +(idle|active)/)
  })

  it('status --max-dead exits 1 above the limit; --json prints the numbers; bad limits are usage errors', async () => {
    const at = await databaseNow()
    await insert(at, [
      { type: 'issue.created', created: -60, dead: -30, attempts: 10 },
      { type: 'issue.created', created: -60, dead: -20, attempts: 10 },
    ])
    const over = await cli(['status', '--max-dead', '1'])
    expect(over.code).toBe(1)
    expect(over.stderr).toBe('outbox-poller: 2 dead events exceed --max-dead 1\n')
    const within = await cli(['status', '--max-dead', '2', '--max-lag', '1h', '--json'])
    expect(within.code, within.stderr).toBe(0)
    expect(JSON.parse(within.stdout)).toMatchObject({ pending: 0, dead: 2, types: [{ eventType: 'issue.created', dead: 2 }] })
    expectUsageError(await cli(['status', '--max-dead', '-1']), /^outbox-poller: --max-dead must be an integer between 0 and \d+ \(got "-1"\)$/)
    expectUsageError(await cli(['status', '--max-lag', 'soon']), /^outbox-poller: --max-lag must be a duration/)
    expectUsageError(await cli(['status', '--table', 'no_such_outbox']), /outbox table "public"."no_such_outbox" does not exist/)
  })

  it('status --watch redraws in place until SIGINT, then exits 0', async () => {
    const watching = startReplica(['status', '--watch', '0.1'], { DATABASE_URL: db.url })
    try {
      await waitFor('two redraws', () => watching.output().split('\x1b[H\x1b[2J').length >= 3)
      watching.child.kill('SIGINT')
      expect(await watching.exited).toEqual({ code: 0, signal: null })
      expect(watching.output()).toMatch(/"public"."outbox" at .*\n {2}pending +0/)
    } finally {
      if (watching.child.exitCode === null) watching.child.kill('SIGKILL')
    }
  })
})

describe('lost captures', () => {
  it('status and captures report a captured table dropped and re-created, with the command and the SQL that renew it', async () => {
    await db.sql`create table invoices (id int primary key, total int, updated_at timestamptz)`
    expect((await cli(['capture', 'invoices', '--entity', 'invoice', '--ignore-columns', 'updated_at'])).code).toBe(0)
    await db.sql`drop table invoices`
    await db.sql`create table invoices (id int primary key, total int, updated_at timestamptz)`
    const status = await outboxStatus(db.sql, outbox)
    expect(status.lostCaptures.map((c) => [c.table, c.problem])).toEqual([['invoices', 'recreated']])
    const command = 'outbox-poller capture invoices --entity invoice --key id --ignore-columns updated_at'
    const text = await cli(['status'])
    expect(text.code).toBe(0) // reported, not a failed check
    expect(text.stdout).toContain(`  capture    invoices was dropped and re-created without its capture triggers: its changes are not captured\n             capture it again: ${command}\n`)
    expect(JSON.parse((await cli(['status', '--json'])).stdout).lostCaptures).toMatchObject([{ table: 'invoices', problem: 'recreated' }])
    const captures = await cli(['captures'])
    expect(captures.stdout).toContain(`invoices was dropped and re-created without its capture triggers: its changes are not captured\n  capture it again: ${command}\n`)
    expect(captures.stdout).toContain(`  or, in the migration that re-creates it: SELECT "public"."outbox_capture_table"('public.invoices', 'invoice', 'id', '{updated_at}', '{}', '{}', NULL, '{insert,update,delete,truncate}');`)
    expect(JSON.parse((await cli(['captures', '--json'])).stdout)).toMatchObject([{ table: 'invoices', entity: 'invoice', key: 'id', problem: 'recreated', recapture: { command } }])
    expect((await cli(command.split(' ').slice(1))).code).toBe(0)
    expect((await outboxStatus(db.sql, outbox)).lostCaptures).toEqual([])
    expect((await cli(['status'])).stdout).not.toContain('capture ')
  })
})

describe('status: ordering indexes', () => {
  it('names an ordering index left from an ordering the outbox no longer records, with the statement that drops it', async () => {
    const unused = async () => (await outboxStatus(db.sql, outbox)).unusedOrderingIndexes
    await db.sql.unsafe(`delete from ${outbox.settings} where name = 'ordering'`)
    expect((await cli(['migrate', '--ordering', 'entity'])).code).toBe(0)
    try {
      // built before the first ordered replica records its ordering: not left over
      expect(await unused()).toEqual([])
      await db.sql.unsafe(`insert into ${outbox.settings} (name, value) values ('ordering', 'entity,continue')`)
      expect(await unused()).toEqual([])
      await db.sql.unsafe(`update ${outbox.settings} set value = 'none,continue' where name = 'ordering'`)
      const left = await unused()
      expect(left.map((u) => [u.index, u.serves, u.recorded])).toEqual([[outbox.entityPendingIndex, 'entity', 'none'], [outbox.truncatedPendingIndex, 'entity', 'none']])
      const text = await cli(['status'])
      expect(text.code).toBe(0) // reported, not a failed check
      expect(text.stdout).toContain(`  warning    index ${outbox.entityPendingIndex} serves --ordering entity, which the outbox no longer records (it records none): every captured write still pays for it; once no replica orders so, drop it as the outbox's owner: ${left[0]!.drop}\n`)
      expect(JSON.parse((await cli(['status', '--json'])).stdout).unusedOrderingIndexes).toMatchObject([{ index: outbox.entityPendingIndex }, { index: outbox.truncatedPendingIndex }])
      for (const u of left) await db.sql.unsafe(u.drop)
      expect(await unused()).toEqual([])
      expect((await cli(['status'])).stdout).not.toContain('warning    index')
    } finally {
      await db.sql.unsafe(`drop index if exists ${outbox.entityPendingIndex}; drop index if exists ${outbox.truncatedPendingIndex}; delete from ${outbox.settings} where name = 'ordering'`)
    }
  })
})

describe('dead', () => {
  async function deadFixtures() {
    const at = await databaseNow()
    return insert(at, [
      { type: 'issue.created', created: -100, dead: -50, attempts: 10, error: 'TypeError: a' },
      { type: 'issue.comment.added', created: -100, dead: -40, attempts: 10, error: 'TypeError: b' },
      { type: 'order.created', created: -100, dead: -30, attempts: 10, error: 'TypeError: c' },
      { type: 'issue%created', created: -100, dead: -20, attempts: 10, error: 'TypeError: d' },
      { type: 'issue.created', created: -100 }, // pending, not dead
      { type: 'issue.created', created: -100, processed: -90 }, // processed, not dead
    ])
  }

  it('lists dead events newest first, filtered by exact type, prefix or *', async () => {
    const ids = await deadFixtures()
    const list = async (typePattern?: string, limit = 50) => (await outboxDeadEvents(db.sql, outbox, { typePattern, limit })).map((e) => e.event_type)
    expect(await list()).toEqual(['issue%created', 'order.created', 'issue.comment.added', 'issue.created'])
    expect(await list('*')).toEqual(['issue%created', 'order.created', 'issue.comment.added', 'issue.created'])
    expect(await list('issue.*')).toEqual(['issue.comment.added', 'issue.created'])
    expect(await list('issue.created')).toEqual(['issue.created'])
    expect(await list('issue_created')).toEqual([]) // no LIKE: _ and % mean themselves
    expect(await list('*', 2)).toEqual(['issue%created', 'order.created'])
    const [first] = await outboxDeadEvents(db.sql, outbox, { typePattern: 'order.created', limit: 1 })
    expect(first).toMatchObject({ id: ids[2], event_type: 'order.created', entity_id: '3', attempts: 10, last_error: 'TypeError: c' })
    expect(first!.dead_at).toBeInstanceOf(Date)
    expect(first!.event_id).toMatch(/^[0-9a-f-]{36}$/)
  })

  it('outbox-poller dead prints a table or JSON; a bad pattern is a usage error', async () => {
    await deadFixtures()
    const table = await cli(['dead', '--type', 'issue.*'])
    expect(table.code, table.stderr).toBe(0)
    expect(table.stdout).toMatch(/^ {2}id +event type +entity id +attempts +dead at +last error\n/)
    expect(table.stdout).toMatch(/issue\.comment\.added +2 +10 +\S+ +TypeError: b\n/)
    expect(table.stdout).not.toMatch(/order\.created/)
    const json = JSON.parse((await cli(['dead', '--json', '--limit', '1'])).stdout)
    expect(json).toMatchObject([{ event_type: 'issue%created', attempts: 10 }])
    expect((await cli(['dead', '--type', 'nothing.*'])).stdout).toBe('no dead events of type nothing.* in "public"."outbox"\n')
    expectUsageError(await cli(['dead', '--type', 'iss*']), /--type must be an event type, 'prefix.\*' or '\*' \(got "iss\*"\)/)
    expectUsageError(await cli(['dead', '--limit', '0']), /--limit must be an integer between 1 and 10000/)
  })
})

describe('replay', () => {
  it('re-queues dead events as new, and a real poller handles them', async () => {
    const at = await databaseNow()
    const ids = await insert(at, [
      { type: 'issue.created', created: -100, dead: -50, retry: -50, attempts: 10, suspect: true, error: 'TypeError: a' },
      { type: 'issue.updated', created: -100, dead: -40, retry: -40, attempts: 10, error: 'TypeError: b' },
      { type: 'order.created', created: -100, dead: -30, retry: -30, attempts: 10, error: 'TypeError: c' },
    ])
    const replayed = await cli(['replay', '--dead', '--type', 'issue.*'])
    expect(replayed.code, replayed.stderr).toBe(0)
    expect(replayed.stdout).toBe('re-queued 2 dead events in "public"."outbox"\n')
    const after = await rows()
    for (const row of after.slice(0, 2)) expect(row).toMatchObject({ processed: false, dead: false, retry_at: null, attempts: 0, last_error: null, suspect: false })
    expect(after[2]).toMatchObject({ dead: true, attempts: 10 })

    const handled: OutboxEvent[] = []
    await startPoller((event) => void handled.push(event)).start()
    await waitFor('replayed events handled', async () => (await rows()).filter((row) => row.processed).length === 2)
    expect(handled.map((e) => e.id).sort()).toEqual(ids.slice(0, 2).sort())
    expect(handled.every((e) => e.attempt === 1)).toBe(true)
    expect((await rows())[2]).toMatchObject({ processed: false, dead: true })
  })

  it('re-queues processed events by type and time window, in chunks', async () => {
    const at = await databaseNow()
    const ids = await insert(at, [
      { type: 'issue.created', created: -1900, processed: -1800 },
      { type: 'issue.created', created: -1900, processed: -1700 },
      { type: 'issue.created', created: -1900, processed: -1600 },
      { type: 'issue.created', created: -11000, processed: -10800 }, // 3 hours ago: outside --since 1h
      { type: 'order.created', created: -1900, processed: -1800 }, // another type
      { type: 'issue.created', created: -100, dead: -50, attempts: 10 }, // dead, not processed
    ])
    const selection = { processed: true, typePattern: 'issue.created', since: new Date(at.getTime() - 3_600_000) }
    expect(await outboxReplayCount(db.sql, outbox, selection)).toBe(3)
    const progress: number[] = []
    expect(await outboxReplay(db.sql, outbox, { ...selection, chunkSize: 2, onChunk: (n) => progress.push(n) })).toBe(3)
    expect(progress).toEqual([2, 3])
    const pending = (await rows()).filter((row) => !row.processed && !row.dead).map((row) => row.id)
    expect(pending).toEqual(ids.slice(0, 3))

    const byId = await cli(['replay', '--processed', '--id', `${ids[3]},${ids[4]}`, '--since', '1d'])
    expect(byId.stdout).toBe('re-queued 2 processed events in "public"."outbox"\n')
    expect((await rows()).filter((row) => row.processed)).toEqual([])
    expect((await rows())[5]).toMatchObject({ dead: true })
  })

  it('refuses to re-queue more than 1000 events without --yes, and needs exactly one of --dead and --processed', async () => {
    await db.sql`
      insert into outbox (event_type, entity_type, entity_id, payload, attempts, dead_at)
      select 'issue.created', 'issue', n::text, '{}', 10, now() from generate_series(1, 1001) n`
    const refused = await cli(['replay', '--dead'])
    expectUsageError(refused, /^outbox-poller: replay would re-queue 1001 dead events \(more than 1000\): pass --yes to confirm$/)
    expect((await rows()).every((row) => row.dead)).toBe(true)
    const confirmed = await cli(['replay', '--dead', '--yes'])
    expect(confirmed.stdout).toBe('re-queued 1001 dead events in "public"."outbox"\n')
    expect((await rows()).some((row) => row.dead)).toBe(false)

    expectUsageError(await cli(['replay']), /replay needs exactly one of --dead and --processed/)
    expectUsageError(await cli(['replay', '--dead', '--processed']), /replay needs exactly one of --dead and --processed/)
    expectUsageError(await cli(['replay', '--dead', '--id', '12x']), /--id must be event row ids \(got "12x"\)/)
    expectUsageError(await cli(['replay', '--dead', '--since', 'yesterday']), /--since must be a duration/)
  })
})

describe('cleanup', () => {
  it('deletes exactly the old processed events while a poller drains new ones', async () => {
    await db.sql`
      insert into outbox (event_type, entity_type, entity_id, payload, created_at, processed_at)
      select 'issue.created', 'issue', n::text, '{}', now() - interval '8 days', now() - interval '8 days' + n * interval '1 ms'
        from generate_series(1, 3000) n`
    const at = await databaseNow()
    const kept = await insert(at, [
      { type: 'issue.created', created: -6.5 * 86400, processed: -6 * 86400 }, // processed 6 days ago: kept
      { type: 'issue.created', created: -41 * 86400, dead: -40 * 86400, attempts: 10 }, // dead 40 days ago: kept unless asked
      { type: 'issue.created', created: -9 * 86400 }, // pending since 9 days: never deleted
    ])
    let handled = 0
    await startPoller(() => void handled++).start()
    let cleaning = true
    const writer = (async () => {
      for (let round = 0; cleaning || round < 5; round++) {
        await db.sql`insert into outbox (event_type, entity_type, entity_id, payload) select 'issue.updated', 'issue', n::text, '{}' from generate_series(1, 100) n`
      }
    })()
    // OUTBOX_POLLER_BATCH_SIZE must not matter: --chunk-size is cleanup's own flag.
    const cleanup = await cli(['cleanup', '--older-than', '7d', '--chunk-size', '100'], { OUTBOX_POLLER_BATCH_SIZE: 'not a number' })
    cleaning = false
    await writer
    expect(cleanup.code, cleanup.stderr).toBe(0)
    // the first line; the maintenance after it may add one (a snapshot another test holds defers the rebuild)
    expect(cleanup.stdout.split('\n')[0]).toBe('deleted 3000 processed events older than 7d from "public"."outbox"')
    const [written] = await db.sql<{ n: number }[]>`select count(*)::int as n from outbox where event_type = 'issue.updated'`
    await waitFor('new events drained', async () => (await db.sql`select 1 from outbox where event_type = 'issue.updated' and processed_at is null`).length === 0)
    expect(written!.n).toBeGreaterThanOrEqual(500)
    const remaining = await db.sql<{ id: string }[]>`select id::text as id from outbox where event_type = 'issue.created' order by id`
    expect(remaining.map((row) => row.id)).toEqual(kept)
    expect(handled).toBeGreaterThanOrEqual(written!.n)

    const dead = await cli(['cleanup', '--older-than', '7d', '--dead-older-than', '30d'])
    // the first line: the maintenance may add one (a bloated pending index rebuilt, per partition on a partitioned outbox)
    expect(dead.stdout.split('\n')[0]).toBe('deleted 0 processed events older than 7d and 1 dead event older than 30d from "public"."outbox"')
    expect((await rows()).filter((row) => row.dead)).toEqual([])
    const missing = await cli(['cleanup'])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toMatch(/required option '--older-than <duration>' not specified/)
    expectUsageError(await cli(['cleanup', '--older-than', '7d', '--chunk-size', '0']), /--chunk-size must be an integer between 1 and 100000 \(got "0"\)/)
  })
})

describe('sql/monitoring.sql', () => {
  it('every query runs against a migrated outbox', async () => {
    const at = await databaseNow()
    await insert(at, [
      { type: 'issue.created', created: -30 },
      { type: 'issue.updated', created: -120, retry: 60, attempts: 1, error: 'Error: boom' },
      { type: 'issue.created', created: -200, dead: -100, attempts: 10, error: 'TypeError: x' },
      { type: 'issue.created', created: -30.1, processed: -30 },
    ])
    const text = await readFile(new URL('../../sql/monitoring.sql', import.meta.url), 'utf8')
    const statements = text
      .split(/;[ \t]*$/m)
      .map((chunk) => chunk.split('\n').filter((line) => !/^\s*--/.test(line)).join('\n').trim())
      .filter(Boolean)
    expect(statements.length).toBeGreaterThanOrEqual(18)
    for (const statement of statements) {
      await expect(db.sql.unsafe(statement), statement).resolves.toBeDefined()
    }
    const [backlog] = await db.sql.unsafe(statements[0]!)
    expect(Number(backlog!.count)).toBe(3) // the seed's backlog: pending and dead
  })
})
