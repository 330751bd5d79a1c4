import { describe, expect, it } from 'vitest'
import { outboxDeadCount, outboxDeadEvents, outboxDeleteDead } from '../../src/ops/dead.js'
import { outboxStatus } from '../../src/ops/monitor.js'
import { outboxPause, outboxPausedTypes, outboxResume } from '../../src/ops/pause.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import type { Poller } from '../../src/poller/poller.js'
import { createServer } from 'node:net'
import { type CliResult, fixturePath, killReplicas, type Replica, runCli, startReplica } from '../support/cli.js'
import { pollerSuite } from '../support/poller-suite.js'
import { waitFor } from '../support/wait-for.js'

const { db, startPoller } = pollerSuite({ truncate: ['outbox_settings'] })
const outbox = outboxTable('public', 'outbox')

async function insert(types: string[], fields: { dead?: boolean; attempts?: number; retry?: boolean } = {}): Promise<string[]> {
  const rows = types.map((type, i) => ({ event_type: type, entity_type: type.split('.')[0]!, entity_id: String(i), payload: {}, attempts: fields.attempts ?? 0 }))
  const inserted = await db.sql<{ id: string }[]>`insert into outbox ${db.sql(rows)} returning id::text as id`
  const ids = inserted.map((row) => row.id)
  if (fields.dead) await db.sql`update outbox set dead_at = now(), retry_at = now(), last_error = 'boom' where id = any(${ids}::bigint[])`
  if (fields.retry) await db.sql`update outbox set retry_at = now() - interval '1 second' where id = any(${ids}::bigint[])`
  return ids
}

async function state(id: string) {
  const [row] = await db.sql<{ processed: boolean; retry_at: string | null; attempts: number }[]>`
    select processed_at is not null as processed, retry_at::text, attempts from outbox where id = ${id}::bigint`
  return row!
}

const processed = async (id: string) => (await state(id)).processed

function recordingPoller(options: Record<string, unknown> = {}): { poller: Poller; handled: string[] } {
  const handled: string[] = []
  const poller = startPoller({ handlers: (event) => void handled.push(event.id), ...options })
  return { poller, handled }
}

/** Waits until the poller sleeps with the wake-up flag raised, after its last look (an empty claim, committed): only a NOTIFY or its timer wakes it now. */
async function asleep(): Promise<void> {
  await waitFor('the wake-up flag raised, then one more claim', async () => {
    const [row] = await db.sql`
      select (select asleep from outbox_wakeup) and exists (select 1 from pg_stat_activity
               where datname = current_database() and state = 'idle' and query = 'commit') as sleeping`
    return row!.sleeping
  })
}

async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

const cli = (args: string[]): Promise<CliResult> => runCli(args, { DATABASE_URL: db.url })

describe('pause and resume', () => {
  it('paused events wait, parked out of the claim, while other types are handled; resume hands them over in id order', async () => {
    await outboxPause(db.sql, outbox, 'billing.*', 'test')
    const [invoice, refund] = await insert(['billing.invoice.created', 'billing.refund.created'])
    const [, marker] = await insert(['billing', 'issue.created'])
    const { poller, handled } = recordingPoller()
    await poller.start()
    await waitFor('the later issue event handled', () => processed(marker!))
    // 'billing' is not under 'billing.*': handled like any other type
    expect(handled).not.toContain(invoice)
    expect(handled).not.toContain(refund)
    expect(await state(invoice!)).toMatchObject({ processed: false, retry_at: 'infinity', attempts: 0 })
    const status = await outboxStatus(db.sql, outbox)
    expect(status).toMatchObject({ pending: 2, due: 0, retrying: 0, paused: 2, pausedTypes: [{ pattern: 'billing.*', pausedBy: 'test' }] })

    expect(await outboxResume(db.sql, outbox, 'billing.*', { chunkSize: 1 })).toEqual({ wasPaused: true, released: 2 })
    await waitFor('the billing events handled', async () => (await processed(invoice!)) && processed(refund!))
    expect(handled.filter((id) => id === invoice || id === refund)).toEqual([invoice, refund])
    expect(await outboxPausedTypes(db.sql, outbox)).toEqual([])
  })

  it('a pause reaches a sleeping replica through its notification, without waiting for --interval-max', async () => {
    const { poller, handled } = recordingPoller({ intervalMin: '1h', intervalMax: '1h' })
    await poller.start()
    await asleep()
    await outboxPause(db.sql, outbox, 'order.created', 'test')
    const [paused, marker] = await insert(['order.created', 'order.updated'])
    await waitFor('the order.updated event handled', () => processed(marker!))
    expect(handled).toEqual([marker])
    expect((await state(paused!)).retry_at).toBe('infinity')
  })

  it('a pause recorded without a notification reaches a replica within --interval-max', async () => {
    const { poller, handled } = recordingPoller({ intervalMin: 20, intervalMax: 200 })
    await poller.start()
    await asleep()
    await db.sql`insert into outbox_settings (name, value) values ('paused:*', 'sql')`
    // the guarantee is about events claimed more than --interval-max after the pause
    await waitFor('--interval-max past since the pause', async () => (await db.sql`select clock_timestamp() - set_at > interval '300 ms' as past from outbox_settings where name = 'paused:*'`)[0]!.past)
    // no notification at all: the replica finds both events on its own, by its timer
    await db.sql`update outbox_wakeup set asleep = false`
    await insert(['a.created', 'b.created'])
    await waitFor('both events parked', async () => (await db.sql`select count(*)::int as n from outbox where retry_at = 'infinity'`)[0]!.n === 2)
    expect(handled).toEqual([])
  })

  it('resume releases only what no other pause matches, and keeps failed events due with their attempts', async () => {
    await outboxPause(db.sql, outbox, '*', 'test')
    await outboxPause(db.sql, outbox, 'billing.invoice.created', 'test')
    const [invoice] = await insert(['billing.invoice.created'])
    const [retried] = await insert(['issue.updated'], { attempts: 2, retry: true })
    const { poller, handled } = recordingPoller()
    await poller.start()
    await waitFor('both parked', async () => (await state(invoice!)).retry_at === 'infinity' && (await state(retried!)).retry_at === 'infinity')
    expect(await outboxResume(db.sql, outbox, '*', { chunkSize: 100 })).toEqual({ wasPaused: true, released: 1 })
    await waitFor('the retried event handled', () => processed(retried!))
    expect(await state(retried!)).toMatchObject({ processed: true, attempts: 2 })
    expect(await state(invoice!)).toMatchObject({ processed: false, retry_at: 'infinity' })
    expect(handled).toEqual([retried])
    // a pattern not paused: nothing to delete, and the one still paused stays parked
    expect(await outboxResume(db.sql, outbox, 'issue.*', { chunkSize: 100 })).toEqual({ wasPaused: false, released: 0 })
    expect(await outboxResume(db.sql, outbox, 'billing.invoice.created', { chunkSize: 100 })).toEqual({ wasPaused: true, released: 1 })
    await waitFor('the invoice handled', () => processed(invoice!))
  })

  it('pause and resume from the CLI, shown by status; a bad pattern is one line, exit 2', async () => {
    const paused = await cli(['pause', 'billing.*'])
    expect(paused.code, paused.stderr).toBe(0)
    expect(paused.stdout).toMatch(/^paused billing\.\* in "public"\."outbox"/)
    expect((await cli(['pause', 'billing.*'])).stdout).toMatch(/already paused/)
    await insert(['billing.x'])
    const status = await cli(['status'])
    expect(status.stdout).toMatch(/paused +0 +\(billing\.\* since \S+ by cli /)
    const bad = await cli(['pause', 'bill*'])
    expect(bad.code).toBe(2)
    expect(bad.stderr.trim()).toBe(`outbox-poller: pattern must be an event type, 'prefix.*' or '*' (got "bill*")`)
    const resumed = await cli(['resume', 'billing.*'])
    expect(resumed.stdout).toMatch(/^resumed billing\.\* in "public"\."outbox"; 0 waiting events back in the queue/)
    expect(await outboxPausedTypes(db.sql, outbox)).toEqual([])
  })

  it("a replica's metrics show the pauses, so a stall alert can tell a pause from a failure", async () => {
    await outboxPause(db.sql, outbox, 'billing.*', 'test')
    const port = await freePort()
    const replicas: Replica[] = [startReplica(['--handlers', fixturePath('record-handler.js'), '--http', `127.0.0.1:${port}`], { DATABASE_URL: db.url, RECORD_FILE: '/dev/null' })]
    try {
      await waitFor('the paused metric', async () => (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.text(), () => '')).includes('outbox_paused_event_types{pattern="billing.*"} 1'))
    } finally {
      await killReplicas(replicas)
    }
  })
})

describe('dead events: one selection to list, count, replay and delete', () => {
  it('dead --delete deletes exactly what dead lists with the same filters, and asks for --yes above 1000', async () => {
    const issues = await insert(['issue.created', 'issue.updated'], { dead: true })
    const [order] = await insert(['order.created'], { dead: true })
    await insert(['issue.created']) // pending: never deleted
    const listed = await outboxDeadEvents(db.sql, outbox, { typePattern: 'issue.*', limit: 50 })
    expect(listed.map((e) => e.id).sort()).toEqual([...issues].sort())
    expect(await outboxDeadCount(db.sql, outbox, { typePattern: 'issue.*' })).toBe(2)
    const result = await cli(['dead', '--delete', '--type', 'issue.*'])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout.trim()).toBe('deleted 2 dead events from "public"."outbox"')
    expect((await db.sql`select id::text from outbox order by id`).map((r) => r.id)).toEqual([order, String(Number(order) + 1)])
    expect(await outboxDeleteDead(db.sql, outbox, { ids: [order!], chunkSize: 10 })).toBe(1)

    await insert(Array.from({ length: 1001 }, () => 'bulk.created'), { dead: true })
    const refused = await cli(['dead', '--delete'])
    expect(refused.code).toBe(2)
    expect(refused.stderr.trim()).toBe('outbox-poller: dead --delete would delete 1001 dead events (more than 1000): pass --yes to confirm')
    expect((await cli(['dead', '--delete', '--yes', '--chunk-size', '300'])).stdout.trim()).toBe('deleted 1001 dead events from "public"."outbox"')
  })
})
