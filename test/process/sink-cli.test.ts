import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { captureTable } from '../../src/capture/capture.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { fixturePath, runCli, startReplica } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { startReceiver } from '../support/sink-receivers.js'
import { waitFor } from '../support/wait-for.js'

let db: TestDatabase
let directory: string

beforeAll(async () => {
  db = await createTestDatabase()
  directory = await mkdtemp(join(tmpdir(), 'outbox-sink-cli-'))
  await db.sql`create table orders (id int primary key, total int)`
  await captureTable(db.sql, outboxTable('public', 'outbox'), { table: 'orders', entity: 'order' })
})
afterAll(async () => {
  await db.drop()
  await rm(directory, { recursive: true, force: true })
})

describe('--sink on the command line', () => {
  it('a replica relays captured changes to a webhook with the secret from a file, beside a --handlers module', async () => {
    const secret = 'whsec_' + Buffer.from('a test secret of enough length').toString('base64')
    const receiver = await startReceiver(secret)
    const secretFile = join(directory, 'webhook.secret')
    await writeFile(secretFile, `${secret}\n`)
    const recordFile = join(directory, 'handled.log')
    const replica = startReplica(['--handlers', fixturePath('record-handler.js'), '--sink', `order.*=${receiver.url}`, '--interval-max', '500ms'], {
      DATABASE_URL: db.url,
      RECORD_FILE: recordFile,
      OUTBOX_POLLER_SINK_SECRET_FILE: secretFile,
    })
    try {
      await db.sql`insert into orders select n, n * 10 from generate_series(1, 200) n`
      await waitFor('all processed', async () => (await db.sql`select count(*)::int as n from outbox where processed_at is null`)[0]!.n === 0, 30_000)
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
