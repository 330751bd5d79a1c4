import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { formatTenantsStatus } from '../../src/cli/tenant-status-report.js'
import { outboxLayout } from '../../src/ops/partition-status.js'
import { outboxTenantsStatus } from '../../src/ops/tenant-status.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { partitionRange, partitionsAhead, periodStart } from '../../src/outbox/partition-upkeep.js'
import { runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { countStatements } from '../support/statement-counter.js'
import { waitFor } from '../support/wait-for.js'

// status --schemas shows each tenant's layout: plain or partitioned, and the tenants whose partition upkeep lags.
let db: TestDatabase
/** The moment every status here is taken at: partitions are placed from it, so the turn of an hour or day changes nothing. */
let at: Date
const dayMs = 86_400_000
const dayAhead = (schema: string, days: number) => partitionRange(outboxTable(schema, 'outbox'), 'day', new Date(periodStart(at, 'day').getTime() + days * dayMs))

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  for (const schema of ['lay_plain', 'lay_day', 'lay_hour', 'lay_none', 'lay_zero']) await db.sql.unsafe(`create schema ${schema}`)
  await migrate({ sql: db.sql, schema: 'lay_plain' })
  await migrate({ sql: db.sql, schema: 'lay_day', partitionBy: 'day' })
  await migrate({ sql: db.sql, schema: 'lay_hour', partitionBy: 'hour' })
  await migrate({ sql: db.sql, schema: 'lay_none', partitionBy: 'day' })
  await migrate({ sql: db.sql, schema: 'lay_zero', partitionBy: 'day' })
  at = (await db.sql<Array<{ now: Date }>>`select now()`)[0]!.now
  // lay_none: no partition for today (its writes land in the default partition); lay_zero: none ahead of today
  await db.sql.unsafe(`drop table ${dayAhead('lay_none', 0).qualified}`)
  await db.sql.unsafe(`insert into lay_none.outbox (event_type, entity_type, entity_id, payload, created_at) values ('t.e', 't', '1', '{}', $1), ('t.e', 't', '2', '{}', $1)`, [at])
  for (let day = 1; day <= partitionsAhead.day; day++) await db.sql.unsafe(`drop table ${dayAhead('lay_zero', day).qualified}`)
})
afterAll(() => db.drop())

describe('status --schemas and the layouts', () => {
  it("each tenant's layout is the one status shows for its outbox alone, warnings worded the same", async () => {
    const status = await outboxTenantsStatus(db.sql, ['lay_*'], 'outbox', { now: at })
    expect(status.tenants.map((t) => t.schema)).toEqual(['lay_day', 'lay_hour', 'lay_none', 'lay_plain', 'lay_zero'])
    for (const tenant of status.tenants) expect(tenant.layout, tenant.schema).toEqual(await outboxLayout(db.sql, outboxTable(tenant.schema, 'outbox'), at))
    const by = Object.fromEntries(status.tenants.map((t) => [t.schema, t.layout]))
    expect(by.lay_plain).toMatchObject({ partitionBy: null, warnings: [] })
    expect(by.lay_hour).toMatchObject({ partitionBy: 'hour', ahead: partitionsAhead.hour, warnings: [] })
    expect(by.lay_day).toMatchObject({ partitionBy: 'day', ahead: partitionsAhead.day, defaultRows: 0, warnings: [] })
    expect(by.lay_none).toMatchObject({ ahead: -1, defaultRows: 2 })
    expect(by.lay_none!.warnings).toEqual([
      "the default partition holds 2 events that found no partition (is partition upkeep running? run cleanup as the outbox's owner)",
      "no partition for the current day, fewer than 1 (upkeep keeps 2; has cleanup not run as the outbox's owner for a day?)",
    ])
    expect(by.lay_zero!.warnings).toEqual(["0 partitions ahead, fewer than 1 (upkeep keeps 2; has cleanup not run as the outbox's owner for a day?)"])
    expect(status.totals.layouts).toEqual({ plain: 1, day: 3, hour: 1, upkeepLagging: 2 })
  })

  it('the text has a layout total and names the tenants whose upkeep lags, the worst first, up to --top', async () => {
    const status = await outboxTenantsStatus(db.sql, ['lay_*'], 'outbox', { now: at })
    const text = formatTenantsStatus(status, ['lay_*'], 10)
    expect(text).toContain('\n  layout     plain 1; partitioned by day 3; partitioned by hour 1; upkeep lags in 2\n')
    const lagging = text.slice(text.indexOf('partition upkeep lags in 2 tenants:\n'))
    expect(lagging.split('\n').slice(1, 4)).toEqual([
      `  ${'lay_none'.padEnd(24)} ${status.tenants[2]!.layout.warnings[0]}`,
      `  ${'lay_none'.padEnd(24)} ${status.tenants[2]!.layout.warnings[1]}`,
      `  ${'lay_zero'.padEnd(24)} ${status.tenants[4]!.layout.warnings[0]}`,
    ])
    const top1 = formatTenantsStatus(status, ['lay_*'], 1)
    expect(top1).not.toContain('lay_zero')
    expect(top1).toContain('\n  … and 1 more (--json lists all)\n')
    const healthy = formatTenantsStatus(await outboxTenantsStatus(db.sql, ['lay_day', 'lay_plain'], 'outbox', { now: at }), ['lay_day', 'lay_plain'], 10)
    expect(healthy).toContain('\n  layout     plain 1; partitioned by day 1\n')
    expect(healthy).not.toContain('upkeep')
  })

  it('status --schemas --json carries every tenant\'s layout; a pattern matching no schema is one line and exit 2', async () => {
    const json = await runCli(['status', '--schemas', 'lay_*', '--json'], { DATABASE_URL: db.url })
    expect(json.code, json.stderr).toBe(0)
    const parsed = JSON.parse(json.stdout) as { tenants: Array<{ schema: string; layout: { partitionBy: string | null; defaultRows: number } }>; totals: { layouts: unknown } }
    expect(parsed.tenants.map((t) => [t.schema, t.layout.partitionBy])).toEqual([['lay_day', 'day'], ['lay_hour', 'hour'], ['lay_none', 'day'], ['lay_plain', null], ['lay_zero', 'day']])
    expect(parsed.tenants[2]!.layout.defaultRows).toBe(2)
    const none = await runCli(['status', '--schemas', 'nobody_*'], { DATABASE_URL: db.url })
    expect(none.code).toBe(2)
    expect(none.stderr.trim()).toBe('outbox-poller: no schema matches nobody_*')
  })

  it('the layouts cost one catalog statement more, however many tenants are partitioned; a union is cut at 200 partitions', async () => {
    const counter = await countStatements(db.url)
    const sql = postgres(counter.url, { max: 1, onnotice: () => {} })
    try {
      await outboxTenantsStatus(sql, ['lay_*'], 'outbox') // the first also reads the types
      const before = counter.statements
      await outboxTenantsStatus(sql, ['lay_*'], 'outbox')
      // discovery, the partitioned outboxes' partitions, one union (of up to 200 plain or 7 hourly tenants)
      expect(counter.statements - before).toBe(3)
      // 8 tenants partitioned by hour, 27 range partitions and the default each: 216 partitions, two unions
      for (let i = 0; i < 8; i++) {
        await db.sql.unsafe(`create schema hourly_${i}`)
        await migrate({ sql: db.sql, schema: `hourly_${i}`, partitionBy: 'hour' })
      }
      const start = counter.statements
      const hourly = await outboxTenantsStatus(sql, ['hourly_*'], 'outbox')
      expect(counter.statements - start).toBe(4)
      expect(hourly.tenants.map((t) => [t.schema, t.layout.partitionBy, t.layout.partitions])).toEqual(Array.from({ length: 8 }, (_, i) => [`hourly_${i}`, 'hour', partitionsAhead.hour + 1]))
    } finally {
      await sql.end()
      await counter.close()
    }
  })

  it('a tenant dropped while status reads it is left out, not an error', async () => {
    for (const schema of ['lay_gone_plain', 'lay_gone_day']) await db.sql.unsafe(`create schema ${schema}`)
    await migrate({ sql: db.sql, schema: 'lay_gone_plain' })
    await migrate({ sql: db.sql, schema: 'lay_gone_day', partitionBy: 'day' })
    for (const schema of ['lay_gone_plain', 'lay_gone_day']) {
      // the tenant's outbox locked: status finds the schema, then waits on it; the schema is dropped and the lock released
      const dropper = await db.sql.reserve()
      try {
        await dropper`begin`
        await dropper.unsafe(`lock table ${schema}.outbox in access exclusive mode`)
        const [{ pid }] = await dropper<Array<{ pid: number }>>`select pg_backend_pid() as pid`
        const status = outboxTenantsStatus(db.sql, ['lay_*'], 'outbox', { now: at })
        await waitFor('status waiting on the locked outbox', async () => (await db.sql`select 1 from pg_stat_activity where ${pid}::int = any(pg_blocking_pids(pid))`).length > 0)
        await dropper.unsafe(`drop schema ${schema} cascade`)
        await dropper`commit`
        const read = await status
        const left = schema === 'lay_gone_plain' ? ['lay_gone_day'] : []
        expect(read.tenants.map((t) => t.schema)).toEqual(['lay_day', ...left, 'lay_hour', 'lay_none', 'lay_plain', 'lay_zero'])
      } finally {
        await dropper`rollback`.catch(() => {}) // after a failure: no transaction left open on the pool's connection
        dropper.release()
      }
    }
  })

  it('tenants being migrated while status runs are absent, or whole with their layout', async () => {
    const schemas = Array.from({ length: 6 }, (_, i) => `lay_new_${i}`)
    for (const schema of schemas) await db.sql.unsafe(`create schema ${schema}`)
    const migrating = runCli(['migrate', '--schemas', 'lay_new_*', '--partition-by', 'day'], { DATABASE_URL: db.url })
    let done = false
    void migrating.finally(() => (done = true))
    const seen = new Set<string>()
    while (!done) {
      const status = await outboxTenantsStatus(db.sql, ['lay_new_*'], 'outbox')
      for (const tenant of status.tenants) {
        expect(tenant.layout, tenant.schema).toMatchObject({ partitionBy: 'day', warnings: [] })
        seen.add(tenant.schema)
      }
      expect([...status.tenants.map((t) => t.schema), ...status.withoutOutbox].sort()).toEqual(schemas)
    }
    expect((await migrating).code).toBe(0)
    expect((await outboxTenantsStatus(db.sql, ['lay_new_*'], 'outbox')).totals.layouts).toEqual({ plain: 0, day: 6, hour: 0, upkeepLagging: 0 })
  })
})
