import postgres from 'postgres'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { createPoller } from '../../src/create-poller.js'
import { runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  // a database (or role) whose sessions default to another DateStyle and time zone: timestamps no longer come as ISO text
  const name = new URL(db.url).pathname.slice(1)
  await db.sql.unsafe(`alter database ${name} set datestyle = 'Postgres, MDY'`)
  await db.sql.unsafe(`alter database ${name} set timezone = 'Asia/Kolkata'`)
})
afterAll(() => db.drop())

it('a database whose sessions default to DateStyle Postgres: migrate --partition-by, a batch on the partitioned outbox and cleanup work', async () => {
  const migrated = await runCli(['migrate', '--partition-by', 'hour'], { DATABASE_URL: db.url })
  expect(migrated.stderr).toBe('')
  expect(migrated.code).toBe(0)
  const sql = postgres(db.url, { max: 1, onnotice: () => {} }) // a new session, with the database's defaults
  const handled: string[] = []
  const poller = createPoller({ connectionString: db.url, intervalMin: 10, intervalMax: 50, handlers: { 'thing.done': async (event) => void handled.push(event.entity_id) } })
  try {
    expect((await sql<Array<{ style: string }>>`select current_setting('datestyle') as style`)[0]!.style).toBe('Postgres, MDY')
    await sql`select outbox_emit('thing.done', 'thing', '1', '{}')`
    await poller.start()
    await waitFor('the event processed', async () => (await sql`select 1 from outbox where processed_at is not null`).length === 1, 20_000)
  } finally {
    await poller.stop({ timeoutMs: 5000 })
    await sql.end({ timeout: 5 })
  }
  expect(handled).toEqual(['1'])
  const cleanup = await runCli(['cleanup', '--older-than', '1h', '--no-maintenance'], { DATABASE_URL: db.url })
  expect(cleanup.stderr).toBe('')
  expect(cleanup.code).toBe(0)
})
