import { describe, expect, it } from 'vitest'
import { resolveOptions } from '../../src/poller/poller-options.js'
import type { OutboxEvent } from '../../src/types.js'
import { runCli } from '../support/cli.js'
import { pollerSuite } from '../support/poller-suite.js'
import { waitFor } from '../support/wait-for.js'

const MB = 1024 * 1024
const { db, startPoller, unprocessed: pending } = pollerSuite()

/** `count` events whose payload is `{"blob": <hex>}` of about `megabytes` MB each: random hex, so TOAST cannot shrink it. */
async function insertBlobs(count: number, megabytes: number, from = 1): Promise<void> {
  await db.sql`
    with blob as (select string_agg(md5(random()::text), '') as hex from generate_series(1, ${Math.round((megabytes * MB) / 32)}::int))
    insert into outbox (event_type, entity_type, entity_id, payload)
    select 'blob.created', 'blob', n::text, jsonb_build_object('blob', (select hex from blob)) from generate_series(${from}::int, ${from + count - 1}::int) n`
}


describe('the byte budget of a claim', () => {
  it('a batch never holds more than --batch-max-bytes of payloads; a bigger event is claimed alone', async () => {
    // 8 of 5 MB (two fit the budget), one of 15 MB (alone), 100 small ones: ~55 MB, few enough for a loaded machine
    await insertBlobs(8, 5)
    await insertBlobs(1, 15, 9)
    await db.sql`insert into outbox (event_type, entity_type, entity_id, payload) select 'small.created', 'small', n::text, '{"n": 1}' from generate_series(10, 109) n`
    // what the handlers saw, batch by batch: the payload text sizes of each batch's events
    const batches: number[][] = []
    let current: number[] = []
    const poller = startPoller({
      batchMaxBytes: '12MB',
      handlers: (event: OutboxEvent) => void current.push(JSON.stringify(event.payload).length),
      afterBatch: (report) => {
        if (report.claimed === 0) return
        expect(report.claimed).toBe(current.length)
        batches.push(current)
        current = []
      },
    })
    await poller.start()
    await waitFor('the outbox drained', async () => (await pending()) === 0, 90_000, 100)
    expect(batches.flat()).toHaveLength(109)
    for (const sizes of batches) {
      if (sizes.length > 1) expect(sizes.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(12 * MB)
    }
    expect(batches.filter((sizes) => sizes.some((size) => size > 12 * MB))).toEqual([[expect.any(Number)]])
    expect(Math.max(...batches.map((sizes) => sizes.filter((size) => size > MB).length))).toBe(2)
  }, 120_000)

  it('rows past the budget are not left locked while the batch runs', async () => {
    await insertBlobs(10, 1)
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    let started = 0
    const poller = startPoller({
      batchMaxBytes: 3.5 * MB,
      handlers: async () => {
        started++
        await gate
      },
    })
    await poller.start()
    await waitFor('the first batch in flight', () => started === 3)
    const lockable = await db.sql.begin(async (tx) => (await tx`select id from outbox where processed_at is null for update skip locked`).length)
    release()
    expect(lockable).toBe(7)
    await waitFor('the outbox drained', async () => (await pending()) === 0, 30_000)
  })

  it('reads sizes in bytes or with a unit, and names the option in errors', async () => {
    expect(resolveOptions({}).batchMaxBytes).toBe(64 * MB)
    expect(resolveOptions({ batchMaxBytes: '64MB' }).batchMaxBytes).toBe(64 * MB)
    expect(resolveOptions({ batchMaxBytes: '512kB' }).batchMaxBytes).toBe(512 * 1024)
    expect(resolveOptions({ batchMaxBytes: '1048576' }).batchMaxBytes).toBe(MB)
    expect(resolveOptions({ batchMaxBytes: '1 GB' }).batchMaxBytes).toBe(1024 * MB)
    expect(() => resolveOptions({ batchMaxBytes: 'lots' })).toThrow('batchMaxBytes must be a size in bytes (1048576) or with a unit (512kB, 64MB, 1GB) (got "lots")')
    expect(() => resolveOptions({ batchMaxBytes: '10' })).toThrow('batchMaxBytes must be between 1024 and 1099511627776 bytes (got "10")')
    const flag = await runCli(['run', '--handlers', 'x.js', '--batch-max-bytes', '5 parsecs'], { DATABASE_URL: db.url })
    expect(flag.code).toBe(2)
    expect(flag.stderr).toMatch(/--batch-max-bytes must be a size in bytes/)
    const env = await runCli(['run', '--handlers', 'x.js'], { DATABASE_URL: db.url, OUTBOX_POLLER_BATCH_MAX_BYTES: '1' })
    expect(env.code).toBe(2)
    expect(env.stderr).toMatch(/OUTBOX_POLLER_BATCH_MAX_BYTES must be between 1024/)
    expect((await runCli(['run', '--help'])).stdout).toMatch(/--batch-max-bytes <size>[\s\S]*\(default: 64MB\)/)
  })
})
