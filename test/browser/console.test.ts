import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import { type AddressInfo, createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type BrowserContext, chromium, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixturePath, killReplicas, type Replica, runCli, startReplica } from '../support/cli.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { partitionRange, partitionsAhead, periodStart } from '../../src/outbox/partition-upkeep.js'
import { createTestDatabase, type TestDatabase, testPartitionBy } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

// Debian's chromium, never a downloaded browser. Without one the file is skipped, and says why.
const chromiumPath = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((path) => existsSync(path))
if (chromiumPath === undefined) console.warn('test/browser skipped: no Chromium at /usr/bin/chromium (apt-get install chromium)')

const token = 'console-test-token-0123456789'
/** Where the screenshots go: CONSOLE_SCREENSHOTS=docs/console writes the README's. */
const screenshotDir = process.env.CONSOLE_SCREENSHOTS

async function freePort(): Promise<number> {
  const server = createNetServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

describe.skipIf(chromiumPath === undefined)('the console, in a real browser', () => {
  let db: TestDatabase
  let context: BrowserContext
  let page: Page
  let profile: string
  let records: string
  const processes: Replica[] = []
  let base: string
  let consoleOutput: () => string
  let writer: NodeJS.Timeout | undefined

  const env = () => ({ DATABASE_URL: db.url })

  async function startConsole(args: string[], extraEnv: Record<string, string> = {}): Promise<string> {
    const port = await freePort()
    const replica = startReplica(['console', '--http', `127.0.0.1:${port}`, ...args], { ...env(), ...extraEnv })
    processes.push(replica)
    await waitFor('the console listening', () => replica.output().includes('outbox-poller console on'))
    consoleOutput ??= replica.output
    return `http://127.0.0.1:${port}`
  }

  const insertDead = async (type: string, error: string, payload: unknown = { card: '4242' }) =>
    (await db.sql<{ id: string }[]>`
      insert into outbox (event_type, entity_type, entity_id, payload, dead_at, retry_at, attempts, last_error)
      values (${type}, 'order', '7', ${db.sql.json(payload as never)}, now(), now(), 10, ${error}) returning id::text as id`)[0]!.id
  const row = async (id: string) => (await db.sql<{ processed: boolean; dead: boolean; retry_at: string | null }[]>`
      select processed_at is not null as processed, dead_at is not null as dead, retry_at::text from outbox where id = ${id}::bigint`)[0]
  const handled = async () => (existsSync(records) ? (await readFile(records, 'utf8')).split('\n').filter(Boolean).map((line) => line.split(' ')[0]!) : [])
  const shot = async (name: string) => {
    if (screenshotDir !== undefined) await page.screenshot({ path: join(screenshotDir, `${name}.png`) })
  }
  const signIn = async () => {
    await page.goto(`${base}/login`)
    await page.fill('input[name=token]', token)
    await page.click('button:has-text("Sign in")')
    await page.waitForURL(`${base}/`)
  }

  beforeAll(async () => {
    db = await createTestDatabase()
    const work = await mkdtemp(join(tmpdir(), 'outbox-console-'))
    profile = join(work, 'profile')
    records = join(work, 'handled.txt')
    if (screenshotDir !== undefined) await mkdir(screenshotDir, { recursive: true })
    await db.sql`create table orders (id bigint primary key, total numeric not null, customer_email text)`
    await runCli(['capture', 'orders', '--entity', 'order', '--exclude-columns', 'customer_email'], env())
    processes.push(startReplica(['--handlers', fixturePath('record-handler.js'), '--interval-min', '20ms', '--interval-max', '200ms', '--no-supervise'], { ...env(), RECORD_FILE: records, HANDLER_DELAY_MS: '2' }))
    base = await startConsole([], { OUTBOX_POLLER_CONSOLE_TOKEN: token })
    // the writer: an order and an invoice every 100 ms while the tests run
    let n = 0
    writer = setInterval(() => {
      n++
      void db.sql`insert into orders values (${n}, ${n * 10}, ${`c${n}@example.com`})`.catch(() => {})
      void db.sql`select outbox_emit('billing.invoice.created', 'invoice', ${String(n)}, ${db.sql.json({ n })})`.catch(() => {})
    }, 100)
    context = await chromium.launchPersistentContext(profile, {
      executablePath: chromiumPath,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1280, height: 900 },
    })
    page = context.pages()[0] ?? (await context.newPage())
  }, 120_000)

  afterAll(async () => {
    clearInterval(writer)
    await context?.close()
    await killReplicas(processes)
    await db?.drop()
    await rm(profile, { recursive: true, force: true })
  })

  it('the overview shows the numbers moving while a writer and a replica run, with charts of the samples', async () => {
    await page.goto(base)
    const processed = page.locator('[data-field=processedLastMinute]')
    const first = Number(await processed.textContent())
    // no reload: console.js refreshes the numbers in place from the console's samples
    await waitFor('processed per minute to move', async () => Number(await processed.textContent()) !== first && Number(await processed.textContent()) > 0, 60_000, 250)
    await waitFor('a chart with two samples', async () => Number(await page.locator('svg[data-chart=processedLastMinute]').getAttribute('data-points')) >= 2, 60_000, 250)
    expect(page.url()).toBe(`${base}/`)
  })

  it('without the token an action is refused, and the event stays dead', async () => {
    const id = await insertDead('order.shipped', 'Error: carrier down')
    await page.goto(`${base}/dead`)
    await expect(page.locator(`tr[data-dead="${id}"] button`).count()).resolves.toBe(0)
    await expect(page.locator('button:has-text("Replay selected")').isDisabled()).resolves.toBe(true)
    // a hand-made POST from the console's own page: no session cookie, refused
    const status = await page.evaluate(async (id) => (await fetch('/actions/replay-dead', { method: 'POST', body: new URLSearchParams({ id }) })).status, id)
    expect(status).toBe(403)
    expect(await row(id)).toMatchObject({ dead: true })
  })

  it('signs in through the form: an HttpOnly SameSite=Strict cookie, the token never in a URL', async () => {
    await signIn()
    const cookies = await context.cookies(base)
    expect(cookies).toHaveLength(1)
    expect(cookies[0]).toMatchObject({ httpOnly: true, sameSite: 'Strict' })
    expect(cookies[0]!.value).not.toContain(token)
    expect(page.url()).not.toContain(token)
    await expect(page.locator('.badge.ok').textContent()).resolves.toBe('signed in')
  })

  it('finds a dead event, opens it (payload hidden), replays it with the token and sees it processed', async () => {
    const id = await insertDead('order.refunded', 'Error: refund API said 503', { card: '4242 4242' })
    await page.goto(`${base}/dead?type=order.*`)
    await page.click(`tr[data-dead="${id}"] a`)
    await expect(page.locator('[data-field=last_error]').textContent()).resolves.toBe('Error: refund API said 503')
    expect(await page.content()).not.toContain('4242')
    await expect(page.locator('text=hidden: start the console with --show-payloads').count()).resolves.toBe(1)
    await shot('dead-event')
    await page.click('button:has-text("Replay this event")')
    await expect(page.locator('[data-result]').textContent()).resolves.toBe('re-queued 1 dead event')
    await waitFor('the replayed event processed', async () => (await row(id))!.processed)
    expect(await handled()).toContain(id)
  })

  it('a cross-site form cannot act, even from the signed-in browser', async () => {
    const id = await insertDead('order.lost', 'Error: gone')
    const evil = createServer((_request, response) => {
      response.setHeader('content-type', 'text/html')
      response.end(`<form method="post" action="${base}/actions/delete-dead"><input name="id" value="${id}"></form><script>document.forms[0].submit()</script>`)
    })
    await new Promise<void>((resolve) => evil.listen(0, '127.0.0.1', resolve))
    try {
      await page.goto(`http://localhost:${(evil.address() as AddressInfo).port}/`)
      await page.waitForURL(`${base}/actions/delete-dead`)
      await expect(page.locator('[data-refused]').textContent()).resolves.toMatch(/^Refused: /)
      expect(await row(id)).toMatchObject({ dead: true })
    } finally {
      evil.close()
    }
  })

  it('pauses a type: its events wait while the rest flow; resume, and they are handled', async () => {
    await page.goto(base)
    await page.fill('input[name=pattern]', 'billing.*')
    await page.click('button:has-text("Pause")')
    await expect(page.locator('[data-result]').textContent()).resolves.toBe('paused billing.*')
    // every action is logged: what, how many, from which address
    const logged = consoleOutput().split('\n').filter((line) => line.includes('"action":"pause"')).map((line) => JSON.parse(line))
    expect(logged).toEqual([expect.objectContaining({ action: 'pause', count: 1, address: '127.0.0.1', pattern: 'billing.*', msg: 'console: paused billing.*' })])
    const [{ since }] = await db.sql<{ since: Date }[]>`select now() as since`
    // an order written after the pause is handled while the invoices written with it wait
    await waitFor('invoices parked and a later order handled', async () => {
      const [r] = await db.sql<{ parked: number; orders: number }[]>`
        select count(*) filter (where event_type like 'billing.%' and retry_at = 'infinity')::int as parked,
               count(*) filter (where event_type like 'order.%' and processed_at is not null and created_at > ${since})::int as orders from outbox`
      return r!.parked >= 3 && r!.orders >= 3
    }, 60_000)
    const [{ handledPaused }] = await db.sql<{ handledPaused: number }[]>`
      select count(*)::int as "handledPaused" from outbox where event_type like 'billing.%' and created_at > ${since} and processed_at is not null`
    expect(handledPaused).toBe(0)
    await page.goto(base)
    await waitFor('the paused card counting', async () => Number(await page.locator('[data-field=paused]').textContent()) > 0, 60_000, 250)
    await expect(page.locator('tr[data-paused="billing.*"]').count()).resolves.toBe(1)
    await page.goto(`${base}/types`)
    await shot('event-types')
    await page.goto(base)
    await page.click('tr[data-paused="billing.*"] button:has-text("Resume")')
    await expect(page.locator('[data-result]').textContent()).resolves.toMatch(/^resumed billing\.\*; \d+ waiting events back in the queue$/)
    await waitFor('every invoice handled', async () => (await db.sql`select count(*)::int as n from outbox where retry_at = 'infinity'`)[0]!.n === 0, 60_000)
  })

  it('asks for confirmation before replaying more than 1,000 events', async () => {
    await db.sql`insert into outbox (event_type, entity_type, entity_id, payload, dead_at, retry_at, attempts, last_error)
                 select 'bulk.imported', 'bulk', g::text, '{}', now(), now(), 10, 'Error: import' from generate_series(1, 1001) as g`
    await page.goto(`${base}/dead?type=bulk.*`)
    await page.click('button:has-text("Replay all matching")')
    await expect(page.locator('[data-field=count]').textContent()).resolves.toBe('1001')
    expect((await db.sql`select count(*)::int as n from outbox where event_type = 'bulk.imported' and dead_at is not null`)[0]!.n).toBe(1001)
    await page.click('button:has-text("Yes, replay dead events")')
    await expect(page.locator('[data-result]').textContent()).resolves.toBe('re-queued 1001 dead events')
  })

  it('replays processed events by type and time', async () => {
    await page.goto(`${base}/types`)
    await page.fill('input[name=type]', 'order.created')
    await page.fill('input[name=since]', '3s')
    await page.click('button:has-text("Replay")')
    const result = page.locator('[data-result], [data-field=count]')
    await result.first().waitFor()
    if ((await page.locator('[data-field=count]').count()) > 0) await page.click('button:has-text("Yes, replay processed events")')
    await expect(page.locator('[data-result]').textContent()).resolves.toMatch(/^re-queued [1-9]\d* processed events?$/)
  })

  it('renders a hostile event type and error as text', async () => {
    const hostile = '<img src=x onerror="window.__owned=1">.created'
    const id = await insertDead(hostile, '<script>window.__owned=2</script>')
    for (const path of ['/dead', `/dead/${id}`, '/types']) {
      await page.goto(`${base}${path}`)
      expect(await page.evaluate(() => (window as unknown as { __owned?: number }).__owned)).toBeUndefined()
      await expect(page.locator('img').count()).resolves.toBe(0)
    }
    await page.goto(`${base}/dead/${id}`)
    await expect(page.locator('[data-field=event_type]').textContent()).resolves.toBe(hostile)
    await expect(page.locator('[data-field=last_error]').textContent()).resolves.toBe('<script>window.__owned=2</script>')
    await page.goto(`${base}/dead`)
    await shot('dead-events')
  })

  it('the live tail shows events as they are processed, filtered by type', async () => {
    await page.goto(`${base}/tail?type=order.*`)
    await waitFor('three tail rows', async () => (await page.locator('tr[data-tail-event]').count()) >= 3, 60_000, 250)
    const types = await page.locator('tr[data-tail-event] td:nth-child(2)').allTextContents()
    expect(types.every((type) => type.startsWith('order.'))).toBe(true)
    await shot('live-tail')
  })

  it('the replicas and captured tables pages list the replica and the captured table', async () => {
    await page.goto(`${base}/replicas`)
    await expect(page.locator('tr[data-replica] td:nth-child(3)').allTextContents()).resolves.toContain('worker')
    await shot('replicas')
    await page.goto(`${base}/captures`)
    await expect(page.locator('td code').allTextContents()).resolves.toContain('orders')
  })

  it('after the run, the overview charts every sample taken', async () => {
    await page.goto(base)
    await waitFor('four samples charted', async () => Number(await page.locator('svg[data-chart=pending]').getAttribute('data-points')) >= 4, 60_000, 250)
    await shot('overview')
  })

  it('shows payloads only when started with --show-payloads', async () => {
    const id = await insertDead('order.noted', 'Error: x', { note: 'visible-with-flag' })
    const url = await startConsole(['--show-payloads'])
    await page.goto(`${url}/dead/${id}`)
    await expect(page.locator('[data-field=payload]').textContent()).resolves.toContain('visible-with-flag')
    // read-only without a token: nothing to sign in to, every action button disabled
    await expect(page.locator('button:has-text("Replay this event")').isDisabled()).resolves.toBe(true)
  })

  it("a partitioned outbox's overview shows its layout, and upkeep lagging as status words it, refreshed in place", async () => {
    await page.goto(base)
    if (testPartitionBy === undefined) await expect(page.locator('[data-layout=plain]').textContent()).resolves.toBe('plain table (not partitioned)')
    expect((await runCli(['migrate', '--table', 'parted', '--partition-by', 'day'], env())).code).toBe(0)
    const parted = await startConsole(['--table', 'parted'])
    await page.goto(parted)
    await expect(page.locator('[data-layout=day] [data-field=partitionsAhead]').textContent()).resolves.toBe(String(partitionsAhead.day))
    await expect(page.locator('[data-field=defaultRows]').textContent()).resolves.toBe('0')
    await expect(page.locator('[data-layout-warnings] p').count()).resolves.toBe(0)
    // no partition for today: a write lands in the default partition
    const [{ now }] = await db.sql<Array<{ now: Date }>>`select now()`
    await db.sql.unsafe(`drop table ${partitionRange(outboxTable('public', 'parted'), 'day', periodStart(now, 'day')).qualified}`)
    await db.sql`insert into parted (event_type, entity_type, entity_id, payload) values ('t.e', 't', '1', '{}')`
    const warnings = page.locator('[data-layout-warnings] p')
    await waitFor('the warnings shown without a reload', async () => (await warnings.count()) === 2, 60_000, 250)
    await expect(warnings.allTextContents()).resolves.toEqual([
      "the default partition holds 1 events that found no partition (is partition upkeep running? run cleanup as the outbox's owner)",
      "no partition for the current day, fewer than 1 (upkeep keeps 2; has cleanup not run as the outbox's owner for a day?)",
    ])
    await expect(page.locator('[data-field=partitionsAhead]').textContent()).resolves.toBe('none for the current day')
    await expect(page.locator('[data-field=defaultRows]').textContent()).resolves.toBe('1')
    expect(page.url()).toBe(`${parted}/`)
    await page.reload()
    await expect(page.locator('[data-layout-warnings] p').count()).resolves.toBe(2)
  })

  it('off loopback it refuses to start without a token, and with one even reading needs it', async () => {
    const refused = await runCli(['console', '--http', `0.0.0.0:${await freePort()}`], env())
    expect(refused.code).toBe(2)
    expect(refused.stderr.trim()).toBe('outbox-poller: --http 0.0.0.0 is not a loopback address: the console refuses to start there without a token (--token-file or OUTBOX_POLLER_CONSOLE_TOKEN)')
    const port = await freePort()
    const replica = startReplica(['console', '--http', `0.0.0.0:${port}`], { ...env(), OUTBOX_POLLER_CONSOLE_TOKEN: token })
    processes.push(replica)
    await waitFor('the console listening', () => replica.output().includes('outbox-poller console on'))
    await context.clearCookies()
    await page.goto(`http://127.0.0.1:${port}/dead`)
    expect(page.url()).toBe(`http://127.0.0.1:${port}/login`)
    expect(await page.content()).not.toContain('order.')
    const api = await page.evaluate(async () => (await fetch('/api/overview', { redirect: 'manual' })).type)
    expect(api).toBe('opaqueredirect')
  })
})
