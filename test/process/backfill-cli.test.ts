import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli, startReplica } from '../support/cli.js'
import { createItemsTable, createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase()
  await createItemsTable(db)
  await db.sql`insert into items select n, 'item ' || n from generate_series(1, 300) n`
})
afterAll(async () => {
  await db.drop()
})

const snapshots = async () => (await db.sql<{ entity_id: string }[]>`select entity_id from outbox as o where event_type = 'item.snapshot' order by o.id`).map((r) => Number(r.entity_id))

describe('outbox-poller backfill', () => {
  it('bad input is one line and exit 2', async () => {
    for (const [args, message] of [
      [['--chunk-size', '0'], /--chunk-size must be an integer between 1 and 100000 \(got "0"\)/],
      [['--rate', 'fast'], /--rate must be a positive number of rows per second/],
      [['--where', 'nope >'], /--where is not a condition on items: syntax error/],
    ] as const) {
      const result = await runCli(['backfill', 'items', ...args], { DATABASE_URL: db.url })
      expect(result.code).toBe(2)
      expect(result.stderr.trim().split('\n')).toHaveLength(1)
      expect(result.stderr).toMatch(message)
    }
    const missing = await runCli(['backfill', 'no_such_table'], { DATABASE_URL: db.url })
    expect([missing.code, missing.stderr.trim()]).toEqual([2, 'outbox-poller: table no_such_table does not exist'])
  })

  it('a dry run counts; killed with SIGKILL mid-way it resumes after the last chunk, writing each row once; a line per chunk off a terminal', async () => {
    const dry = await runCli(['backfill', 'items', '--dry-run'], { DATABASE_URL: db.url })
    expect(dry.stdout.trim()).toBe('items: 300 rows to write as item.snapshot')
    const slow = startReplica(['backfill', 'items', '--chunk-size', '10', '--rate', '20'], { DATABASE_URL: db.url })
    await waitFor('a few chunks', async () => (await snapshots()).length >= 50)
    const status = await runCli(['status'], { DATABASE_URL: db.url })
    expect(status.stdout).toMatch(/backfill {3}items \d+\/300 rows \(\d+%\) as item.snapshot, running/)
    slow.child.kill('SIGKILL')
    await slow.exited
    expect(slow.output()).toMatch(/^items: 10\/300 rows, \d+ rows\/s, key 10 \(3%\)$/m)
    const stopped = await runCli(['status'], { DATABASE_URL: db.url })
    expect(stopped.stdout).toMatch(/backfill {3}items \d+\/300 rows .*stopped at key \d+: outbox-poller backfill items --resume/)
    const resumed = await runCli(['backfill', 'items', '--resume', '--chunk-size', '100'], { DATABASE_URL: db.url })
    expect(resumed.code).toBe(0)
    expect(resumed.stdout).toMatch(/backfilled items: 300 item.snapshot events into "public"."outbox"/)
    expect(await snapshots()).toEqual(Array.from({ length: 300 }, (_, i) => i + 1))
    expect((await runCli(['status'], { DATABASE_URL: db.url })).stdout).not.toMatch(/backfill /)
  })
})
