import { afterAll, beforeAll, expect, it } from 'vitest'
import { runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table items (id int primary key)`
})
afterAll(() => db.drop())

// --table names an outbox that was never migrated: a user mistake, told in one line, exit 2 (not a driver error, exit 1)
for (const [name, args] of [
  ['capture', ['capture', 'items', '--entity', 'item', '--table', 'nope']],
  ['capture --events insert', ['capture', 'items', '--entity', 'item', '--events', 'insert', '--table', 'nope']],
  ['uncapture', ['uncapture', 'items', '--table', 'nope']],
  ['move-captures', ['move-captures', '--to-table', 'outbox', '--table', 'nope']],
] as const) {
  it(`${name} of an outbox that does not exist says so in one line and exits 2`, async () => {
    const result = await runCli([...args], { DATABASE_URL: db.url })
    expect(result.stderr).toBe('outbox-poller: outbox table "public"."nope" does not exist: run `outbox-poller migrate` first\n')
    expect(result.code).toBe(2)
  })
}
