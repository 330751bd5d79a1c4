import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixturePath, runCli, startReplica } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db.drop()
})

const index = async (name = 'outbox_entity_pending') => (await db.sql`select to_regclass(${`public.${name}`})::text as name`)[0]!.name

describe('the ordering index', () => {
  it('exists only where ordering is used: a replica with --ordering entity on an outbox without it refuses, saying how to create it', async () => {
    expect(await index()).toBeNull() // every event would pay for it
    const refused = await runCli(['--handlers', fixturePath('record-handler.js'), '--ordering', 'entity'], { DATABASE_URL: db.url })
    expect(refused.code).toBe(2)
    expect(refused.stderr.split('\n')[0]).toBe('outbox-poller: --ordering entity needs the index "public"."outbox_entity_pending", which this outbox lacks: run `outbox-poller migrate --ordering entity` as the outbox\'s owner first')
    expect((await db.sql`select 1 from outbox_settings where name = 'ordering'`).length).toBe(0) // nothing recorded
  })

  it('migrate --ordering entity creates it and the truncate barriers\' index (once), and a later migrate keeps them', async () => {
    const created = await runCli(['migrate', '--ordering', 'entity'], { DATABASE_URL: db.url })
    expect(created.stdout).toBe('"public"."outbox" is up to date\n"public"."outbox_entity_pending" created, "public"."outbox_truncated_pending" created: pollers may run with --ordering entity\n')
    expect(await index()).toBe('outbox_entity_pending')
    expect(await index('outbox_truncated_pending')).toBe('outbox_truncated_pending')
    expect((await runCli(['migrate', '--ordering', 'entity'], { DATABASE_URL: db.url })).stdout).toMatch(/"public"."outbox_truncated_pending" exists: /)
    expect((await runCli(['migrate'], { DATABASE_URL: db.url })).code).toBe(0)
    expect(await index()).toBe('outbox_entity_pending')
    const bad = await runCli(['migrate', '--ordering', 'none'], { DATABASE_URL: db.url })
    expect([bad.code, bad.stderr]).toEqual([2, 'outbox-poller: --ordering must be entity or group (got "none")\n'])
  })

  it('an invalid index left by an interrupted concurrent build is rebuilt', async () => {
    await db.sql`update pg_index set indisvalid = false where indexrelid = 'outbox_entity_pending'::regclass`
    const refused = await runCli(['--handlers', fixturePath('record-handler.js'), '--ordering', 'entity'], { DATABASE_URL: db.url })
    expect(refused.stderr).toMatch(/has only half-built \(an interrupted build\): run `outbox-poller migrate --ordering entity`/)
    expect((await runCli(['migrate', '--ordering', 'entity'], { DATABASE_URL: db.url })).stdout).toMatch(/"public"."outbox_entity_pending" created concurrently, "public"."outbox_truncated_pending" exists: /)
    expect((await db.sql`select indisvalid from pg_index where indexrelid = 'outbox_entity_pending'::regclass`)[0]!.indisvalid).toBe(true)
  })
})

describe('the group ordering index', () => {
  const groupIndex = async () => (await db.sql`select to_regclass('public.outbox_group_pending')::text as name`)[0]!.name

  it('--ordering group needs the entity index and its own: a replica on an outbox with only the first refuses, naming the missing one', async () => {
    expect(await index()).toBe('outbox_entity_pending') // from the tests above
    expect(await groupIndex()).toBeNull()
    const refused = await runCli(['--handlers', fixturePath('record-handler.js'), '--ordering', 'group'], { DATABASE_URL: db.url })
    expect(refused.code).toBe(2)
    expect(refused.stderr.split('\n')[0]).toBe('outbox-poller: --ordering group needs the index "public"."outbox_group_pending", which this outbox lacks: run `outbox-poller migrate --ordering group` as the outbox\'s owner first')
    expect((await db.sql`select 1 from outbox_settings where name = 'ordering'`).length).toBe(0)
  })

  it('migrate --ordering group creates what is missing, and a replica then records the mode; one started with entity ordering refuses', async () => {
    const created = await runCli(['migrate', '--ordering', 'group'], { DATABASE_URL: db.url })
    expect(created.stdout).toBe('"public"."outbox" is up to date\n"public"."outbox_entity_pending" exists, "public"."outbox_truncated_pending" exists, "public"."outbox_group_pending" created: pollers may run with --ordering group\n')
    expect(await groupIndex()).toBe('outbox_group_pending')
    expect((await runCli(['migrate'], { DATABASE_URL: db.url })).code).toBe(0)
    expect(await groupIndex()).toBe('outbox_group_pending') // a plain migrate keeps it
    const replica = startReplica(['--handlers', fixturePath('record-handler.js'), '--ordering', 'group'], { DATABASE_URL: db.url })
    try {
      await waitFor('mode recorded', async () => (await db.sql`select 1 from outbox_settings where name = 'ordering'`).length === 1, 20_000)
      expect((await db.sql`select value from outbox_settings where name = 'ordering'`)[0]!.value).toBe('group, on dead: continue')
      const other = await runCli(['--handlers', fixturePath('record-handler.js'), '--ordering', 'entity'], { DATABASE_URL: db.url })
      expect(other.code).toBe(2)
      expect(other.stderr).toMatch(/this outbox runs with ordering "group, on dead: continue" .* but this replica was started with "entity, on dead: continue"/)
    } finally {
      replica.child.kill('SIGTERM')
      await replica.exited
      await db.sql`delete from outbox_settings`
    }
  })
})
