import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { describe, expect, inject, it } from 'vitest'
import { grantPollerRole } from '../../src/outbox/grant.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { pollerSuite } from '../support/poller-suite.js'
import { waitFor } from '../support/wait-for.js'

// A role of its own with the server settings that used to livelock the outbox; dropped at the end.
const role = `outbox_test_timeouts_${randomBytes(4).toString('hex')}`
const { db, startPoller, stopPollers, unprocessed: pending } = pollerSuite({
  items: true,
  async setup(db) {
    await db.sql.unsafe(`create role ${role} login password 'pw'`)
    await db.sql.unsafe(`alter role ${role} set idle_in_transaction_session_timeout = '1s'`)
    await db.sql.unsafe(`alter role ${role} set statement_timeout = '50ms'`)
    // the claim plans generically whatever this says; the handlers' statements plan as the role says
    await db.sql.unsafe(`alter role ${role} set plan_cache_mode = force_custom_plan`)
    await grantPollerRole(db.sql, outboxTable('public', 'outbox'), { role })
    const url = new URL(db.url)
    url.username = role
    url.password = 'pw' // the embedded server asks for passwords
    return url.toString()
  },
  async teardown() {
    const admin = postgres(inject('adminDatabaseUrl'), { max: 1, onnotice: () => {} })
    await admin.unsafe(`drop role if exists ${role}`)
    await admin.end()
  },
})

describe("the poller's batch transactions under strict server timeouts", () => {
  it("a handler slower than the role's idle_in_transaction_session_timeout still commits its batch, once", async () => {
    const runs = new Map<string, number>()
    const poller = startPoller({
      batchSize: 250,
      concurrency: 4,
      handlers: async (event) => {
        runs.set(event.entity_id, (runs.get(event.entity_id) ?? 0) + 1)
        await new Promise((resolve) => setTimeout(resolve, event.entity_id === '100' ? 2_000 : 1))
      },
    })
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 300) n`
    await poller.start()
    await waitFor('the outbox drained', async () => (await pending()) === 0, 30_000, 100)
    expect(runs.size).toBe(300)
    expect([...runs.values()].every((n) => n === 1)).toBe(true)
    expect((await db.sql`select count(*)::int as n from outbox where attempts > 0`)[0]!.n).toBe(0)
  })

  it("a settlement slower than the role's 50 ms statement_timeout commits, each event handled once", async () => {
    // every UPDATE of the outbox (the settlement) takes 100 ms, whatever the machine
    await db.sql.unsafe(`create function slow_settle() returns trigger language plpgsql as $$ begin perform pg_sleep(0.1); return null; end $$`)
    await db.sql.unsafe('create trigger slow_settle before update on outbox for each statement execute function slow_settle()')
    try {
      const runs = new Map<string, number>()
      const poller = startPoller({ batchSize: 5000, handlers: (event) => void runs.set(event.id, (runs.get(event.id) ?? 0) + 1) })
      await db.sql`insert into items select n, 'item ' || n from generate_series(1, 5000) n`
      await poller.start()
      await waitFor('the outbox drained', async () => (await pending()) === 0, 20_000, 100)
      expect(runs.size).toBe(5000)
      expect([...runs.values()].every((n) => n === 1)).toBe(true)
    } finally {
      await stopPollers()
      await db.sql.unsafe('drop trigger slow_settle on outbox; drop function slow_settle()')
    }
  })

  it('sets its own statement and idle timeouts with SET LOCAL, whatever the role says; its handlers plan as the role says', async () => {
    let seen: Record<string, string> | undefined
    const poller = startPoller({
      batchSize: 100,
      concurrency: 10,
      handlerTimeout: '5s',
      handlers: async (_event, ctx) => {
        const tx = await ctx.tx()
        const [row] = await tx`select current_setting('statement_timeout') as statement, current_setting('idle_in_transaction_session_timeout') as idle, current_setting('plan_cache_mode') as plans`
        seen = row as Record<string, string>
      },
    })
    await db.sql`insert into items values (1, 'one')`
    await poller.start()
    await waitFor('handled', () => seen)
    // the drain timeout (5 s + 10 s); 100 ÷ 10 = 10 rounds of 5 s, + 10 s
    expect(seen).toEqual({ statement: '15s', idle: '1min', plans: 'force_custom_plan' })
  })
})
