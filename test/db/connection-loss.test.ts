import { describe, expect, it } from 'vitest'
import { captureLogger } from '../support/capture-logger.js'
import { pollerSuite } from '../support/poller-suite.js'
import { waitFor } from '../support/wait-for.js'

const { db, startPoller, pending } = pollerSuite({ items: true, defaults: { retryDelay: 10, retryDelayMax: 50 } })

const terminate = (applicationName: string) => db.sql`select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${applicationName}`

/** A handler that takes `ms` unless its signal aborts first (then it rejects with the reason). */
function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => {
      clearTimeout(timer)
      reject(signal.reason)
    })
  })
}

describe('a lost batch connection', () => {
  it('aborts the running handlers and starts no further event of that batch once the close is seen', async () => {
    const timeline: string[] = []
    const log = captureLogger()
    const poller = startPoller({
      applicationName: 'outbox-test-lost-batch',
      batchSize: 250,
      concurrency: 4,
      logger: log,
      handlers: async (event, ctx) => {
        timeline.push(`start ${event.id}`)
        ctx.signal.addEventListener('abort', () => timeline.push(`aborted: ${(ctx.signal.reason as Error).message}`))
        await abortableSleep(20, ctx.signal)
      },
      afterBatch: (report) => void (report.claimed > 0 && timeline.push(`batch ${report.committed ? 'committed' : 'rolled back'} with ${report.claimed}`)),
    })
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 250) n`
    await poller.start()
    await waitFor('the batch under way', () => timeline.length >= 12)
    await terminate('outbox-test-lost-batch')
    await waitFor('the outbox drained after reconnecting', async () => (await pending()) === 0, 30_000)

    const firstAbort = timeline.findIndex((entry) => entry.startsWith('aborted'))
    expect(firstAbort).toBeGreaterThan(0)
    expect(timeline[firstAbort]).toMatch(/connection closed/)
    const lostBatchEnd = timeline.findIndex((entry) => entry.startsWith('batch '))
    expect(timeline[lostBatchEnd]).toBe('batch rolled back with 250')
    // between the close (the first abort, in the close handler) and the end of the lost batch: no start
    expect(timeline.slice(firstAbort, lostBatchEnd).filter((entry) => entry.startsWith('start'))).toEqual([])
    expect(log.entries.filter((entry) => entry.msg.startsWith('connection lost'))).toHaveLength(1)
  })

  it("names the server's reason when the connection is killed during a statement", async () => {
    const log = captureLogger()
    let calls = 0
    const poller = startPoller({
      applicationName: 'outbox-test-killed-statement',
      logger: log,
      handlers: async (_event, ctx) => {
        if (++calls > 1) return
        const tx = await ctx.tx()
        await tx`select pg_sleep(30)`
      },
    })
    await db.sql`insert into items values (1, 'one')`
    await poller.start()
    await waitFor('the handler statement running', async () => (await db.sql`select 1 from pg_stat_activity where application_name = 'outbox-test-killed-statement' and query like '%pg_sleep%' and state = 'active'`).length > 0)
    await terminate('outbox-test-killed-statement')
    await waitFor('processed after reconnecting', async () => (await pending()) === 0, 30_000)
    const lost = log.entries.filter((entry) => entry.msg.startsWith('connection lost'))
    expect(lost).toHaveLength(1)
    expect(lost[0]!.fields.reason).toBe('57P01: terminating connection due to administrator command')
  })

  it('a batch that keeps dying shrinks, charges what was running and isolates the culprit; the rest is processed', async () => {
    const log = captureLogger()
    const runs = new Map<string, number>()
    let culpritRunning = false
    const batchSizes: number[] = []
    const poller = startPoller({
      applicationName: 'outbox-test-dying-batch',
      batchSize: 40,
      concurrency: 4,
      maxAttempts: 3,
      logger: log,
      afterBatch: (report) => void (report.claimed > 0 && batchSizes.push(report.claimed)),
      handlers: async (event, ctx) => {
        runs.set(event.entity_id, (runs.get(event.entity_id) ?? 0) + 1)
        if (event.entity_id !== '7') return abortableSleep(5, ctx.signal)
        culpritRunning = true // the server (a pooler's timeout, say) kills every connection it runs on
        await abortableSleep(30_000, ctx.signal)
      },
    })
    await db.sql`insert into items select n, 'item ' || n from generate_series(1, 60) n`
    await poller.start()
    let killing = true
    const killer = (async () => {
      while (killing) {
        if (culpritRunning) {
          culpritRunning = false
          await terminate('outbox-test-dying-batch')
        }
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    })()
    try {
      await waitFor('the culprit dead-lettered', async () => (await db.sql`select 1 from outbox where entity_id = '7' and dead_at is not null`).length > 0, 60_000)
      await waitFor('every other event processed', async () => (await pending()) === 0, 30_000)
    } finally {
      killing = false
      await killer
    }
    const [culprit] = await db.sql`select attempts, suspect, last_error from outbox where entity_id = '7'`
    expect(culprit).toMatchObject({ attempts: 3, suspect: true })
    expect(culprit!.last_error).toMatch(/its batch died .* while this event was being handled/)
    // halved after the first death
    expect(batchSizes[0]).toBe(40)
    expect(batchSizes[1]).toBe(20)
    // innocents charged as batch-mates at most once, then handled alone
    const [{ worst }] = await db.sql`select max(attempts)::int as worst from outbox where entity_id <> '7'`
    expect(worst).toBeLessThanOrEqual(1)
    expect(log.entries.some((entry) => entry.msg.startsWith('the batch keeps dying'))).toBe(true)
  })
})
