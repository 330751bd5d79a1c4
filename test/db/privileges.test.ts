import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { captureTable } from '../../src/capture/capture.js'
import { lostCaptures } from '../../src/capture/capture-registry.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { fixturePath, runCli, startReplica } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

// Roles are cluster-wide: unique names, so parallel files and reruns never collide.
const suffix = randomBytes(4).toString('hex')
const appRole = `app_writer_${suffix}`
const pollerRole = `outbox_poller_${suffix}`
let db: TestDatabase
let directory: string

function urlAs(role: string): string {
  const url = new URL(db.url)
  url.username = role
  url.password = 'pw'
  return url.toString()
}

beforeAll(async () => {
  db = await createTestDatabase()
  directory = await mkdtemp(join(tmpdir(), 'outbox-privileges-'))
  await db.sql.unsafe(`create role ${appRole} login password 'pw'`)
  await db.sql.unsafe(`create role ${pollerRole} login password 'pw'`)
  await db.sql`create table issues (id serial primary key, title text)`
  await db.sql.unsafe(`grant select, insert, update, delete on issues to ${appRole}; grant usage on sequence issues_id_seq to ${appRole}`)
  await captureTable(db.sql, outboxTable('public', 'outbox'), { table: 'issues', entity: 'issue' })
})
afterAll(async () => {
  // roles outlive the database: revoke what they hold in it, then drop them, while it is still there
  await db.sql.unsafe(`drop owned by ${appRole}, ${pollerRole}; drop role ${appRole}; drop role ${pollerRole}`)
  await db.drop()
  await rm(directory, { recursive: true, force: true })
})

describe('least privilege', () => {
  it('an application role with no privilege on the outbox writes captured tables and its changes are captured', async () => {
    const app = postgres(urlAs(appRole), { max: 1, onnotice: () => {} })
    try {
      await app`insert into issues (title) values ('from the app')`
      await app`update issues set title = 'edited by the app'`
      await app`delete from issues`
      await expect(app`select count(*) from outbox`).rejects.toThrow(/permission denied/)
      await expect(app`insert into outbox (event_type, entity_type, entity_id, payload) values ('x.y', 'x', '1', '{}')`).rejects.toThrow(/permission denied/)
      await expect(app`create table mine (id int primary key)`).rejects.toThrow(/permission denied/)
    } finally {
      await app.end()
    }
    const rows = await db.sql`select event_type from outbox order by id`
    expect(rows.map((r) => r.event_type)).toEqual(['issue.created', 'issue.updated', 'issue.deleted'])
  })

  it('`grant` gives the poller role exactly what polling needs; it polls without any access to entity tables', async () => {
    const granted = await runCli(['grant', pollerRole], { DATABASE_URL: db.url })
    expect(granted.code).toBe(0)
    expect(granted.stdout.trim().split('\n')).toEqual([
      `GRANT USAGE ON SCHEMA "public" TO "${pollerRole}";`,
      `GRANT SELECT, UPDATE ON "public"."outbox" TO "${pollerRole}";`,
      `GRANT SELECT, UPDATE ON "public"."outbox_wakeup" TO "${pollerRole}";`,
      `GRANT SELECT, INSERT ON "public"."outbox_settings" TO "${pollerRole}";`,
    ])
    expect((await runCli(['grant', 'no_such_role'], { DATABASE_URL: db.url })).stderr).toMatch(/role no_such_role does not exist/)

    const poller = postgres(urlAs(pollerRole), { max: 1, onnotice: () => {} })
    try {
      await expect(poller`select * from issues`).rejects.toThrow(/permission denied/)
      await expect(poller`delete from outbox`).rejects.toThrow(/permission denied/)
    } finally {
      await poller.end()
    }
    const file = join(directory, 'handled.log')
    const replica = startReplica(['--handlers', fixturePath('record-handler.js'), '--interval-max', '500ms'], { DATABASE_URL: urlAs(pollerRole), RECORD_FILE: file })
    await waitFor('events processed by the restricted role', async () => (await db.sql`select 1 from outbox where processed_at is null`).length === 0, 20_000)
    replica.child.kill('SIGTERM')
    expect((await replica.exited).code).toBe(0)
    expect((await readFile(file, 'utf8')).trim().split('\n')).toHaveLength(3)
  })

  it("the pollers' role reads the registry of captured tables, for /healthz and the metrics", async () => {
    await db.sql`create table gone (id int primary key)`
    await captureTable(db.sql, outboxTable('public', 'outbox'), { table: 'gone', entity: 'gone' })
    await db.sql`drop table gone`
    const poller = postgres(urlAs(pollerRole), { max: 1, onnotice: () => {} })
    try {
      expect((await lostCaptures(poller, outboxTable('public', 'outbox'))).map((c) => [c.table, c.problem])).toEqual([['public.gone', 'dropped']])
      await expect(poller`delete from outbox_captured`).rejects.toThrow(/permission denied/)
    } finally {
      await poller.end()
    }
  })

  it("no search_path an application role sets can stand in for the capture's functions and operators, in either mode", async () => {
    const evil = `evil_${suffix}`
    await db.sql.unsafe(`create schema ${evil} authorization ${appRole}`)
    await db.sql`create table tickets (id serial primary key, title text)`
    await db.sql.unsafe(`grant select, insert, update, delete on tickets to ${appRole}; grant usage on sequence tickets_id_seq to ${appRole}`)
    const outbox = outboxTable('public', 'outbox')
    await captureTable(db.sql, outbox, { table: 'tickets', entity: 'ticket', mode: 'row', ignoreColumns: ['title'] })
    await captureTable(db.sql, outbox, { table: 'issues', entity: 'issue', mode: 'statement', ignoreColumns: [] })
    const app = postgres(urlAs(appRole), { max: 1, onnotice: () => {} })
    try {
      // each trap would run as the outbox's owner if the capture resolved a name through the writer's search_path
      await app.unsafe(`
        create function ${evil}.trap_text(text, text) returns boolean language plpgsql as $$ begin raise exception 'hijacked'; end $$;
        create function ${evil}.trap_concat(text, text) returns text language plpgsql as $$ begin raise exception 'hijacked'; end $$;
        create function ${evil}.trap_field(jsonb, text) returns text language plpgsql as $$ begin raise exception 'hijacked'; end $$;
        create function ${evil}.trap_merge(jsonb, jsonb) returns jsonb language plpgsql as $$ begin raise exception 'hijacked'; end $$;
        create function ${evil}.to_jsonb(anyelement) returns jsonb language plpgsql as $$ begin raise exception 'hijacked'; end $$;
        create function ${evil}.current_setting(text, boolean) returns text language plpgsql as $$ begin raise exception 'hijacked'; end $$;
        create operator ${evil}.= (leftarg = text, rightarg = text, function = ${evil}.trap_text);
        create operator ${evil}.<> (leftarg = text, rightarg = text, function = ${evil}.trap_text);
        create operator ${evil}.|| (leftarg = text, rightarg = text, function = ${evil}.trap_concat);
        create operator ${evil}.->> (leftarg = jsonb, rightarg = text, function = ${evil}.trap_field);
        create operator ${evil}.|| (leftarg = jsonb, rightarg = jsonb, function = ${evil}.trap_merge);
        set search_path = ${evil}, pg_catalog, public`)
      await expect(app`select 'a'::text = 'a'::text`).rejects.toThrow(/hijacked/) // the traps are live in this session
      await app`insert into tickets (title) values ('one'), ('two')`
      await app`update tickets set title = 'ignored'`
      await app`delete from tickets`
      const [three, four] = await app`insert into issues (title) values ('three'), ('four') returning id` // the traps catch text = text: ids only
      await app`update issues set title = 'edited' where id = ${three!.id}`
      await app`delete from issues where id = ${four!.id}`
    } finally {
      await app.end()
    }
    const rows = await db.sql`select event_type, entity_id from outbox where entity_type in ('ticket', 'issue') and id > (select max(id) - 8 from outbox) order by id`
    expect(rows.map((r) => r.event_type)).toEqual(['ticket.created', 'ticket.created', 'ticket.deleted', 'ticket.deleted', 'issue.created', 'issue.created', 'issue.updated', 'issue.deleted'])
  })

  it('the capture function cannot be attached by a role the owner did not allow', async () => {
    const app = postgres(urlAs(appRole), { max: 1, onnotice: () => {} })
    try {
      await expect(app`select public.outbox_capture_table('issues', 'spoof', 'id')`).rejects.toThrow(/permission denied/)
    } finally {
      await app.end()
    }
  })
})
