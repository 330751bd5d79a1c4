import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixturePath, runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

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
    expect(created.stdout).toBe('"public"."outbox" is up to date\n"public"."outbox_entity_pending" and "public"."outbox_truncated_pending" created: pollers may run with --ordering entity\n')
    expect(await index()).toBe('outbox_entity_pending')
    expect(await index('outbox_truncated_pending')).toBe('outbox_truncated_pending')
    expect((await runCli(['migrate', '--ordering', 'entity'], { DATABASE_URL: db.url })).stdout).toMatch(/"public"."outbox_truncated_pending" exist: /)
    expect((await runCli(['migrate'], { DATABASE_URL: db.url })).code).toBe(0)
    expect(await index()).toBe('outbox_entity_pending')
    const bad = await runCli(['migrate', '--ordering', 'none'], { DATABASE_URL: db.url })
    expect([bad.code, bad.stderr]).toEqual([2, 'outbox-poller: --ordering must be entity (got "none")\n'])
  })

  it('an invalid index left by an interrupted concurrent build is rebuilt', async () => {
    await db.sql`update pg_index set indisvalid = false where indexrelid = 'outbox_entity_pending'::regclass`
    const refused = await runCli(['--handlers', fixturePath('record-handler.js'), '--ordering', 'entity'], { DATABASE_URL: db.url })
    expect(refused.stderr).toMatch(/has only half-built \(an interrupted build\): run `outbox-poller migrate --ordering entity`/)
    expect((await runCli(['migrate', '--ordering', 'entity'], { DATABASE_URL: db.url })).stdout).toMatch(/"public"."outbox_truncated_pending" created concurrently: /)
    expect((await db.sql`select indisvalid from pg_index where indexrelid = 'outbox_entity_pending'::regclass`)[0]!.indisvalid).toBe(true)
  })
})
