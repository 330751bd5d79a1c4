import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { formatStatus } from '../../src/cli/status-report.js'
import { OutboxMetrics } from '../../src/observe/metrics.js'
import { ReplicaHealth } from '../../src/observe/replica-health.js'
import { outboxStatus } from '../../src/ops/monitor.js'
import { partitionsAheadWarnBelow } from '../../src/ops/partition-status.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { partitionRange, partitionsAhead, periodStart } from '../../src/outbox/partition-upkeep.js'
import { runCli } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

const hourly = outboxTable('public', 'hourly')
const hourMs = 3_600_000
let db: TestDatabase
/** The moment every status here is taken at: partitions are placed from it, so the turn of an hour changes nothing. */
let at: Date

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  await migrate({ sql: db.sql, table: 'plain_outbox' })
  await migrate({ sql: db.sql, table: 'hourly', partitionBy: 'hour' })
  at = (await db.sql<Array<{ now: Date }>>`select now()`)[0]!.now
})
afterAll(() => db.drop())

/** The hourly partition `hours` after the current one. */
const hourAhead = (hours: number) => partitionRange(hourly, 'hour', new Date(periodStart(at, 'hour').getTime() + hours * hourMs))

async function insertAt(createdAt: Date) {
  await db.sql`insert into hourly (event_type, entity_type, entity_id, payload, created_at) values ('t.e', 't', '1', '{}', ${createdAt})`
}

describe('the layout in status', () => {
  it('a plain outbox: plain table, no warning', async () => {
    const status = await outboxStatus(db.sql, outboxTable('public', 'plain_outbox'))
    expect(status.layout).toEqual({ partitionBy: null, partitions: 0, newestEndsAt: null, ahead: 0, defaultRows: 0, warnings: [] })
    expect(formatStatus(status, 'plain_outbox')).toContain('\n  layout     plain table\n')
  })

  it('a partitioned outbox as migrate left it: its partitions, the newest one\'s end, all ahead, no warning', async () => {
    const { layout } = await outboxStatus(db.sql, hourly, { now: at })
    expect(layout).toEqual({
      partitionBy: 'hour',
      partitions: partitionsAhead.hour + 1,
      newestEndsAt: hourAhead(partitionsAhead.hour).to,
      ahead: partitionsAhead.hour,
      defaultRows: 0,
      warnings: [],
    })
  })

  it('events that found no partition (after the last, in a gap) are counted and warned of; a gap stops the partitions ahead', async () => {
    await db.sql.unsafe(`drop table ${hourAhead(5).qualified}`)
    await insertAt(new Date(hourAhead(5).from.getTime() + 60_000))
    await insertAt(new Date(at.getTime() + 40 * 24 * hourMs))
    // written into a partition: not counted
    await insertAt(new Date(hourAhead(3).from.getTime() + 60_000))
    const status = await outboxStatus(db.sql, hourly, { now: at })
    expect(status.layout).toMatchObject({ partitions: partitionsAhead.hour, ahead: 4, defaultRows: 2 })
    expect(status.layout.warnings).toEqual(["the default partition holds 2 events that found no partition (is partition upkeep running? run cleanup as the outbox's owner)"])
    const text = formatStatus(status, hourly.qualified)
    expect(text).toContain(`\n  layout     partitioned by hour: ${partitionsAhead.hour} partitions, the newest ends ${hourAhead(partitionsAhead.hour).to.toISOString()}, 4 ahead; 2 events in the default partition\n`)
    expect(text).toContain('\n  warning    the default partition holds 2 events')
  })

  it('fewer partitions ahead than a daily upkeep leaves, or none for the current period, is warned of', async () => {
    await db.sql.unsafe(`drop table ${hourAhead(2).qualified}`)
    expect(partitionsAheadWarnBelow.hour).toBe(2)
    const fewer = await outboxStatus(db.sql, hourly, { now: at })
    expect(fewer.layout.ahead).toBe(1)
    expect(fewer.layout.warnings[1]).toBe("1 partition ahead, fewer than 2 (upkeep keeps 26; has cleanup not run as the outbox's owner for a day?)")
    await db.sql.unsafe(`drop table ${hourAhead(0).qualified}`)
    const none = await outboxStatus(db.sql, hourly, { now: at })
    expect(none.layout.ahead).toBe(-1)
    expect(none.layout.warnings[1]).toMatch(/^no partition for the current hour, fewer than 2 /)
  })

  it('status --json carries the layout; the health check warns and the gauges say it', async () => {
    const json = await runCli(['status', '--table', 'hourly', '--json'], { DATABASE_URL: db.url })
    expect(json.code, json.stderr).toBe(0)
    const { layout } = JSON.parse(json.stdout) as { layout: { partitionBy: string; defaultRows: number; warnings: string[] } }
    expect(layout).toMatchObject({ partitionBy: 'hour', defaultRows: 2 })
    expect(layout.warnings[0]).toMatch(/^the default partition holds 2 events/)

    const metrics = new OutboxMetrics()
    const health = new ReplicaHealth(db.sql, hourly, metrics, () => Date.now(), 60_000)
    health.startSampling(50)
    try {
      await expect.poll(async () => (await health.check()).warnings, { timeout: 5_000 }).toContainEqual(expect.stringMatching(/^the default partition holds 2 events/))
      const text = await metrics.registry.metrics()
      expect(text).toMatch(/\noutbox_default_partition_events 2\n/)
      expect(text).toMatch(/\noutbox_partitions_ahead\{partition_by="hour"\} -?\d+\n/)
    } finally {
      health.stop()
    }
    const plain = new OutboxMetrics()
    const plainHealth = new ReplicaHealth(db.sql, outboxTable('public', 'plain_outbox'), plain, () => Date.now(), 60_000)
    plainHealth.startSampling(50)
    try {
      await expect.poll(async () => (await plain.registry.metrics()).match(/\noutbox_default_partition_events (\d+)\n/)?.[1], { timeout: 5_000 }).toBe('0')
      expect(await plain.registry.metrics()).not.toMatch(/\noutbox_partitions_ahead\{/)
    } finally {
      plainHealth.stop()
    }
  })
})
