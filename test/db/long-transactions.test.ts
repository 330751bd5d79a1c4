import { randomBytes } from 'node:crypto'
import postgres, { type Sql } from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { formatStatus } from '../../src/cli/status-report.js'
import { vacuumHorizon } from '../../src/database/vacuum-horizon.js'
import { OutboxMetrics } from '../../src/observe/metrics.js'
import { ReplicaHealth } from '../../src/observe/replica-health.js'
import { outboxStatus } from '../../src/ops/monitor.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { outboxSettleBatch, settleQueries } from '../../src/poller/settle.js'
import type { OutboxEvent } from '../../src/types.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

const outbox = outboxTable('public', 'outbox')
const statsRole = `outbox_no_stats_${randomBytes(4).toString('hex')}`
let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create role ${statsRole} login password 'pw'; grant select on outbox, outbox_captured, outbox_settings to ${statsRole}`)
})
afterAll(async () => {
  await db.sql.unsafe(`drop owned by ${statsRole}; drop role ${statsRole}`)
  await db.drop()
})

/** A session holding a REPEATABLE READ snapshot (a long report, a forgotten BEGIN) until released. */
async function holdSnapshot(url: string, applicationName: string): Promise<{ pid: number; release: () => Promise<void> }> {
  const session: Sql = postgres(url, { max: 1, onnotice: () => {}, connection: { application_name: applicationName } })
  const reserved = await session.reserve()
  await reserved`begin isolation level repeatable read`
  const [{ pid }] = await reserved<{ pid: number }[]>`select pg_backend_pid() as pid`
  return {
    pid,
    async release() {
      await reserved`rollback`
      reserved.release()
      await session.end()
    },
  }
}

/** How many transactions ago `pid`'s snapshot was taken, by the server's own account. */
async function xidAge(pid: number): Promise<number> {
  const [row] = await db.sql<{ age: number }[]>`select greatest(age(backend_xmin), age(backend_xid)) as age from pg_stat_activity where pid = ${pid}`
  return row!.age
}

describe('long transactions', () => {
  it('status (text and JSON) names the session with the oldest snapshot: pid, application, age', async () => {
    const report = await holdSnapshot(db.url, 'nightly-report')
    try {
      // burn transaction ids, as the writers would, so the snapshot grows old
      for (let i = 0; i < 20; i++) await db.sql`select txid_current()`
      const ours = await xidAge(report.pid) // before the status: an age only grows
      const status = await outboxStatus(db.sql, outbox)
      const oldest = status.horizon.oldestSnapshot!
      expect(oldest).not.toBeNull()
      // on a shared server another session may be older still: then it is at least as old as ours
      expect(oldest.xidAge).toBeGreaterThanOrEqual(ours)
      if (oldest.pid === report.pid) {
        expect(oldest).toMatchObject({ applicationName: 'nightly-report', state: 'idle in transaction' })
        expect(formatStatus(status, outbox.qualified)).toMatch(new RegExp(`snapshot   oldest [0-9.]+ s \\(pid ${report.pid}, application "nightly-report", user \\w+, database \\w+, idle in transaction\\)`))
      }
      expect(JSON.parse(JSON.stringify(status)).horizon).toMatchObject({ seesAllSessions: true, slots: expect.any(Array), preparedTransactions: expect.any(Array), warnings: expect.any(Array) })
    } finally {
      await report.release()
    }
  })

  it("without pg_read_all_stats other roles' snapshots are hidden, and status says so", async () => {
    const url = new URL(db.url)
    url.username = statsRole
    url.password = 'pw'
    const restricted = postgres(url.toString(), { max: 1, onnotice: () => {} })
    const report = await holdSnapshot(db.url, 'nightly-report')
    try {
      const horizon = await vacuumHorizon(restricted)
      expect(horizon.seesAllSessions).toBe(false)
      // PostgreSQL 15 hides the snapshot of another role's session; 18 shows it, but not its state or times
      if (horizon.oldestSnapshot?.pid === report.pid) expect(horizon.oldestSnapshot).toMatchObject({ ageSeconds: null, state: null })
      expect(formatStatus(await outboxStatus(restricted, outbox), outbox.qualified)).toMatch(/other roles' sessions are hidden: grant pg_read_all_stats to see them/)
    } finally {
      await report.release()
      await restricted.end()
    }
  })

  it('the health sampler publishes the oldest snapshot age as a metric', async () => {
    const report = await holdSnapshot(db.url, 'nightly-report')
    const metrics = new OutboxMetrics()
    const health = new ReplicaHealth(db.sql, outbox, metrics, () => Date.now(), 60_000)
    try {
      await waitFor('the snapshot held for a while', async () => (await db.sql`select 1 from pg_stat_activity where pid = ${report.pid} and now() - xact_start > interval '200 ms'`).length > 0)
      health.startSampling(50)
      const gauge = async () => (await metrics.registry.getSingleMetric('outbox_oldest_snapshot_age_seconds')!.get()).values[0]?.value ?? 0
      expect(await waitFor('the gauge sampled', async () => ((await gauge()) >= 0.2 ? await gauge() : 0))).toBeGreaterThanOrEqual(0.2)
    } finally {
      health.stop()
      await report.release()
    }
  })
})

describe('the settlement under a growing outbox', () => {
  it('is planned for the outbox as it is each time, never kept as a plan made while the outbox was small', async () => {
    // A generic plan made on a nearly empty outbox is a seq scan, kept while the table grows (a held snapshot:
    // nothing is pruned) until its statistics change: it read the whole heap for every batch (BENCHMARKS.md,
    // section 10). Generic plans are forced on this session, so a settlement kept as a prepared statement would use one.
    const connection = postgres(db.url, { max: 1, onnotice: () => {}, connection: { plan_cache_mode: 'force_generic_plan' } as Record<string, string> })
    try {
      const rows = await db.sql<Array<{ id: string; created_at: Date }>>`insert into outbox (event_type, entity_type, entity_id, payload)
        select 'settle.plan', 'item', g::text, '{}' from generate_series(1, 10) g returning id::text as id, created_at`
      for (const row of rows) {
        await connection.unsafe('begin')
        await outboxSettleBatch(connection, settleQueries(outbox), { processed: [row as unknown as OutboxEvent], failed: [], held: [], holdMs: 0, deferred: [], deferMs: 0 }, 5)
      }
      const [settled] = await db.sql<{ n: number }[]>`select count(*)::int as n from outbox where event_type = 'settle.plan' and processed_at is not null`
      expect(settled!.n).toBe(10)
      const [plans] = await connection<{ generic: number }[]>`select coalesce(sum(generic_plans), 0)::int as generic from pg_prepared_statements where statement like ${'%set processed_at = now()%'}`
      expect(plans!.generic).toBe(0)
    } finally {
      await connection.end()
    }
  })
})
