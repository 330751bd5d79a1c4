import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { writeOrders } from '../support/tenants.js'

// The operator's commands across tenants: migrate, capture, grant, status, dead, replay, cleanup with --schemas.
let db: TestDatabase
let env: Record<string, string>
const role = `tenant_poller_${Date.now().toString(36)}`

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  env = { DATABASE_URL: db.url }
  for (const schema of ['tenant_a', 'tenant_b', 'tenant_c']) await db.sql.unsafe(`create schema ${schema}`)
  await db.sql.unsafe('create table tenant_c.outbox (note text)') // not ours: its migration fails
  await db.sql.unsafe(`create role ${role}`)
})
afterAll(async () => {
  await db.drop()
  const admin = (await import('postgres')).default(new URL('/postgres', db.url.replace(/\/[^/]*$/, '/postgres')).toString(), { max: 1 })
  await admin.unsafe(`drop role if exists ${role}`).catch(() => {})
  await admin.end()
})

describe('operations across tenants', () => {
  it('migrate --schemas migrates every matching schema; a failing one is named and the others are migrated', async () => {
    const result = await runCli(['migrate', '--schemas', 'tenant_*'], env)
    expect(result.code).toBe(1)
    expect(result.stdout).toMatch(/applied to "tenant_a"\."outbox": 0001_outbox/)
    expect(result.stdout).toMatch(/applied to "tenant_b"\."outbox": 0001_outbox/)
    expect(result.stderr).toMatch(/^outbox-poller: tenant_c: migration 0001_outbox failed/m)
    expect(result.stderr).not.toMatch(/\n\s+at /) // no stack trace
    const failFast = await runCli(['migrate', '--schemas', 'tenant_c', 'tenant_a', '--fail-fast'], env)
    expect(failFast.code).toBe(1)
    expect(failFast.stdout).not.toMatch(/tenant_c/) // tenant_a comes first and is up to date; tenant_c fails, last anyway
    await db.sql.unsafe('drop table tenant_c.outbox')
    const again = await runCli(['migrate', '--schemas', 'tenant_*'], env)
    expect(again.code).toBe(0)
    expect(again.stdout).toMatch(/"tenant_a"\."outbox" is up to date/)
    expect(again.stdout).toMatch(/applied to "tenant_c"\."outbox"/)
  })

  it('capture <table> --schemas attaches each schema\'s own table; grant --schemas grants in each', async () => {
    for (const schema of ['tenant_a', 'tenant_b', 'tenant_c']) await db.sql.unsafe(`create table ${schema}.orders (id int primary key, note text)`)
    const captured = await runCli(['capture', 'orders', '--schemas', 'tenant_*', '--entity', 'order'], env)
    expect(captured.code).toBe(0)
    for (const schema of ['tenant_a', 'tenant_b', 'tenant_c']) expect(captured.stdout).toContain(`capturing ${schema}.orders as order.created|updated|deleted`)
    const granted = await runCli(['grant', role, '--schemas', 'tenant_*'], env)
    expect(granted.code).toBe(0)
    for (const schema of ['tenant_a', 'tenant_b', 'tenant_c']) {
      const [row] = await db.sql`select has_table_privilege(${role}, ${`${schema}.outbox`}, 'UPDATE') as can`
      expect(row!.can).toBe(true)
    }
  })

  it('status --schemas shows the totals and the worst tenants; --json has every tenant; dead, replay and cleanup work in each', async () => {
    await writeOrders(db.sql, 'tenant_a', 3)
    await writeOrders(db.sql, 'tenant_b', 5)
    await db.sql`update tenant_b.outbox set dead_at = now(), attempts = 10, last_error = 'boom' where entity_id in ('1', '2')`
    await db.sql`update tenant_c.outbox set processed_at = now() - interval '2 days'`
    const text = await runCli(['status', '--schemas', 'tenant_*', '--top', '1'], env)
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(/^3 tenant outboxes matching tenant_\*/)
    expect(text.stdout).toMatch(/pending {4}6\n/)
    expect(text.stdout).toMatch(/dead {7}2\n/)
    expect(text.stdout).toMatch(/worst 1 by dead events:\n {2}tenant_b /)
    const json = JSON.parse((await runCli(['status', '--schemas', 'tenant_*', '--json'], env)).stdout)
    expect(json.tenants.map((tenant: { schema: string }) => tenant.schema)).toEqual(['tenant_a', 'tenant_b', 'tenant_c'])
    expect(json.totals).toMatchObject({ tenants: 3, pending: 6, dead: 2 })
    const limited = await runCli(['status', '--schemas', 'tenant_*', '--max-dead', '1'], env)
    expect(limited.code).toBe(1)
    expect(limited.stderr).toContain('2 dead events exceed --max-dead 1')
    const dead = await runCli(['dead', '--schemas', 'tenant_*'], env)
    expect(dead.code).toBe(0)
    expect(dead.stdout).toMatch(/no dead events in "tenant_a"\."outbox"/)
    expect(dead.stdout).toContain('boom')
    const replayed = await runCli(['replay', '--dead', '--schemas', 'tenant_*'], env)
    expect(replayed.code).toBe(0)
    expect(replayed.stdout).toContain('re-queued 2 dead events in "tenant_b"."outbox"')
    const cleaned = await runCli(['cleanup', '--schemas', 'tenant_*', '--older-than', '1d'], env)
    expect(cleaned.code).toBe(0)
    expect(cleaned.stdout).toContain('deleted 0 processed events older than 1d from "tenant_c"') // captured on no insert yet
    expect((await db.sql`select count(*)::int as n from tenant_b.outbox where dead_at is null and processed_at is null`)[0]!.n).toBe(5)
  })

  it('migrate and capture --schemas over many schemas: all done, on a new server session every ten schemas', async () => {
    const many = Array.from({ length: 25 }, (_, i) => `many_${String(i + 1).padStart(2, '0')}`)
    for (const schema of many) await db.sql.unsafe(`create schema ${schema}; create table ${schema}.orders (id int primary key, note text)`)
    // the sessions the commands open, seen while they run (each lives for its ten schemas, long enough to be seen)
    const pids = new Set<number>()
    let watching = true
    const watcher = (async () => {
      while (watching) {
        for (const row of await db.sql<{ pid: number }[]>`select pid from pg_stat_activity where application_name like 'outbox-poller/%/migrate'`) pids.add(row.pid)
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    })()
    const migrated = await runCli(['migrate', '--schemas', 'many_*'], env)
    watching = false
    await watcher
    expect(migrated.code).toBe(0)
    expect(pids.size).toBeGreaterThanOrEqual(2)
    const captured = await runCli(['capture', 'orders', '--schemas', 'many_*', '--entity', 'order'], env)
    expect(captured.code).toBe(0)
    for (const schema of many) {
      await writeOrders(db.sql, schema, 1)
      const [row] = await db.sql.unsafe(`select count(*)::int as n from ${schema}.outbox`)
      expect(row!.n).toBe(1)
    }
  })

  it('--schemas and --schema together, or a pattern matching nothing, are one clear line and exit 2', async () => {
    const both = await runCli(['status', '--schemas', 'tenant_*', '--schema', 'tenant_a'], env)
    expect(both.code).toBe(2)
    expect(both.stderr.trim()).toBe('outbox-poller: --schema and --schemas exclude each other: one outbox, or every outbox of the matching schemas')
    const none = await runCli(['cleanup', '--schemas', 'nobody_*', '--older-than', '1d'], env)
    expect(none.code).toBe(2)
    expect(none.stderr.trim()).toBe('outbox-poller: no schema matches nobody_*')
  })

  it('migrate --schemas gives a schema created after grant --schemas the grants of the others; a role since dropped is said, not an error', async () => {
    await db.sql.unsafe('create schema tenant_d')
    const canUpdate = async (who: string, schema: string) => (await db.sql`select has_table_privilege(${who}, ${`${schema}.outbox`}, 'UPDATE') as can`)[0]!.can as boolean
    const migrated = await runCli(['migrate', '--schemas', 'tenant_*'], env)
    expect(migrated.code).toBe(0)
    expect(migrated.stdout).toContain(`granted ${role} on "tenant_d"."outbox", as in the other matching schemas`)
    expect(migrated.stdout).not.toMatch(/granted \S+ on "tenant_a"/) // granted there already
    expect(await canUpdate(role, 'tenant_d')).toBe(true)
    expect((await db.sql`select has_table_privilege(${role}, 'tenant_d.outbox', 'DELETE') as can`)[0]!.can).toBe(false)
    const gone = `${role}_gone`
    await db.sql.unsafe(`create role ${gone}`)
    expect((await runCli(['grant', gone, '--schemas', 'tenant_a'], env)).code).toBe(0)
    await db.sql.unsafe(`drop owned by ${gone}; drop role ${gone}`)
    await db.sql.unsafe('create schema tenant_e')
    const again = await runCli(['migrate', '--schemas', 'tenant_*'], env)
    expect(again.code).toBe(0)
    expect(again.stdout).toContain(`granted ${role} on "tenant_e"."outbox"`)
    expect(again.stderr).toMatch(new RegExp(`^outbox-poller: tenant_e: not granted to ${gone}, granted in other matching schemas: role ${gone} does not exist`, 'm'))
    expect(await canUpdate(role, 'tenant_e')).toBe(true)
    // a record the outbox's settings hold without the grant behind it (the pollers' role may write there) grants nothing
    const other = `${role}_other`
    await db.sql.unsafe(`create role ${other}`)
    await db.sql`insert into tenant_a.outbox_settings (name, value) values (${`grant:${other}`}, 'poll')`
    await db.sql.unsafe('create schema tenant_f')
    expect((await runCli(['migrate', '--schemas', 'tenant_*'], env)).stdout).not.toContain(other)
    expect(await canUpdate(other, 'tenant_f')).toBe(false)
    await db.sql.unsafe(`drop owned by ${other}; drop role ${other}`)
  })
})
