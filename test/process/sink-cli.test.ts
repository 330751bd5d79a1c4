import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { captureTable } from '../../src/capture/capture.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { fixturePath, runCli } from '../support/cli.js'
import { pendingEvents, processSuite } from '../support/process-suite.js'
import { deleteRedisStream, startReceiver } from '../support/sink-receivers.js'
import { waitFor } from '../support/wait-for.js'

const suite = processSuite('sink-cli', {
  items: false,
  truncate: 'orders',
  setup: async (db) => {
    await db.sql`create table orders (id int primary key, total int)`
    await captureTable(db.sql, outboxTable('public', 'outbox'), { table: 'orders', entity: 'order' })
  },
})
const { db } = suite

describe('--sink on the command line', () => {
  it('a replica relays captured changes to a webhook with the secret from a file, beside a --handlers module', async () => {
    const secret = 'whsec_' + Buffer.from('a test secret of enough length').toString('base64')
    const receiver = await startReceiver(secret)
    const secretFile = join(suite.directory, 'webhook.secret')
    await writeFile(secretFile, `${secret}\n`)
    const recordFile = join(suite.directory, 'handled.log')
    const replica = suite.start(['--handlers', fixturePath('record-handler.js'), '--sink', `order.*=${receiver.url}`, '--interval-max', '500ms'], {
      RECORD_FILE: recordFile,
      OUTBOX_POLLER_SINK_SECRET_FILE: secretFile,
    })
    try {
      await db.sql`insert into orders select n, n * 10 from generate_series(1, 200) n`
      await waitFor('all processed', async () => (await pendingEvents(db)) === 0, 30_000)
      expect(await pendingEvents(db)).toBe(0)
      const [{ processed }] = await db.sql<{ processed: number }[]>`select count(*)::int as processed from outbox where processed_at is not null`
      expect(processed).toBe(200)
      // the handler module ran too, on every event
      const handled = (await readFile(recordFile, 'utf8')).split('\n').filter(Boolean)
      expect(new Set(handled.map((line) => line.split(' ')[0])).size).toBe(200)
      expect(receiver.deliveries).toHaveLength(200)
      expect(receiver.deliveries.every((d) => d.signatureValid && d.status === 200)).toBe(true)
      expect(new Set(receiver.deliveries.map((d) => d.body.event_id)).size).toBe(200)
      expect(replica.output()).not.toContain(secret)
    } finally {
      replica.child.kill('SIGTERM')
      expect((await replica.exited).code).toBe(0)
      await receiver.close()
    }
  })

  it('under the supervisor, a refused event of a relayed batch fails alone and its batch-mates are processed', async () => {
    const secret = 'whsec_' + Buffer.from('another test secret, long enough').toString('base64')
    const receiver = await startReceiver(secret, (delivery) => ({ status: delivery.body.entity_id === '13' ? 422 : 200 }))
    const replica = suite.start(['--sink', receiver.url, '--max-attempts', '1', '--interval-max', '500ms'], { OUTBOX_POLLER_SINK_SECRET: secret })
    try {
      await db.sql`insert into orders select n, n * 10 from generate_series(1, 100) n`
      await waitFor('all settled', async () => (await pendingEvents(db)) === 0, 30_000)
      const rows = await db.sql<{ entity_id: string; processed: boolean; dead: boolean; attempts: number; last_error: string | null }[]>`
        select entity_id, processed_at is not null as processed, dead_at is not null as dead, attempts, last_error from outbox order by id`
      expect(rows.find((row) => row.entity_id === '13')).toMatchObject({ processed: false, dead: true, attempts: 1, last_error: expect.stringContaining('HTTP 422') })
      expect(rows.filter((row) => row.entity_id !== '13').every((row) => row.processed && row.attempts === 0)).toBe(true)
      expect(new Set(receiver.deliveries.map((d) => d.body.entity_id)).size).toBe(100)
      expect(receiver.deliveries.every((d) => d.signatureValid)).toBe(true)
    } finally {
      replica.child.kill('SIGTERM')
      expect((await replica.exited).code).toBe(0)
      await receiver.close()
    }
  })

  it('bench --sink relays next to both floors measured in the same run: a smoke test, no speed is asserted', async () => {
    const result = await runCli(['bench', '--only', 'relay', '--sink', 'webhook', '--sink', 'redis://127.0.0.1:6379?stream=outbox-cli-bench&dedupe_ttl=1m', '--events', '1000', '--json'], { DATABASE_URL: db.url }, 120_000)
    await deleteRedisStream('outbox-cli-bench')
    expect(result.code).toBe(0)
    const { relay } = JSON.parse(result.stdout) as { relay: Array<{ sink: string; ceilingPerSecond: number; ratio: number; drain: { eventsPerSecond: number }; relay: { eventsPerSecond: number; name: string }; twoPollers: { processes: number }; oneBatchAtATime?: { eventsPerSecond: number } }> }
    expect(relay.map((r) => r.sink)).toEqual(['a local webhook receiver (node:http, 204, keep-alive)', 'redis://127.0.0.1:6379?stream=outbox-cli-bench&dedupe_ttl=1m'])
    for (const run of relay) {
      expect(run.ceilingPerSecond).toBeGreaterThan(0)
      expect(run.drain.eventsPerSecond).toBeGreaterThan(0)
      expect(run.ratio).toBeCloseTo(run.relay.eventsPerSecond / Math.min(run.drain.eventsPerSecond, run.ceilingPerSecond))
      expect(run.twoPollers.processes).toBe(2)
    }
    // Redis overlaps its batches: the relay one batch at a time is measured beside it; a webhook never overlaps
    expect(relay[1]!.oneBatchAtATime?.eventsPerSecond).toBeGreaterThan(0)
    expect(relay[0]!.oneBatchAtATime).toBeUndefined()
    expect(result.stderr).toMatch(/one batch at a time/)
    expect(result.stderr).toMatch(/min\(no-op drain, ceiling\)/)
    const noSink = await runCli(['bench', '--only', 'relay'], { DATABASE_URL: db.url })
    expect(noSink.code).toBe(2)
    expect(noSink.stderr).toMatch(/--only relay needs a --sink/)
  }, 120_000)

  it('a bad sink is a one-line configuration error with its credentials masked', async () => {
    const bad = await runCli(['--sink', 'amqp://relay:hunter2@127.0.0.1:5672/'], { DATABASE_URL: db.url })
    expect(bad.code).toBe(2)
    expect(bad.stderr).not.toContain('hunter2')
    expect(bad.stderr.trim().split('\n')).toHaveLength(1)
    const unknown = await runCli(['--sink', 'ftp://example.com/x'], { DATABASE_URL: db.url })
    expect(unknown.code).toBe(2)
    const noSecret = await runCli(['--sink', 'http://127.0.0.1:9/hook', '--no-supervise'], { DATABASE_URL: db.url })
    expect(noSecret.code).toBe(2)
    expect(noSecret.stderr).toMatch(/secret/)
  })
})
