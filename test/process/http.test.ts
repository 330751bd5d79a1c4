import { createServer } from 'node:net'
import parsePrometheusTextFormat from 'parse-prometheus-text-format'
import postgres, { type Sql } from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { captureTable } from '../../src/capture/capture.js'
import { type EmbeddedDatabase, startEmbeddedPostgres } from '../../src/database/embedded-postgres.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { fixturePath, type Replica, runCli, startReplica } from '../support/cli.js'
import { waitFor } from '../support/wait-for.js'

// This file stops its database, so it runs on an embedded PostgreSQL of its own, never the shared server.
let server: EmbeddedDatabase
let sql: Sql
const replicas: Replica[] = []

beforeAll(async () => {
  server = await startEmbeddedPostgres()
  sql = postgres(server.url, { max: 2, onnotice: () => {} })
  await migrate({ sql })
  await sql`create table items (id int primary key, name text)`
  await captureTable(sql, outboxTable('public', 'outbox'), { table: 'items', entity: 'item' })
})
afterEach(async () => {
  for (const replica of replicas.splice(0)) {
    if (replica.child.exitCode === null) replica.child.kill('SIGKILL')
    await replica.exited
  }
})
afterAll(async () => {
  await sql.end({ timeout: 1 }).catch(() => {})
  await server.stop()
})

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number }
      probe.close(() => resolve(port))
    })
  })
}

type Family = { name: string; metrics: Array<{ value?: string; labels?: Record<string, string>; count?: string }> }
async function scrape(port: number): Promise<Map<string, Family>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  return new Map((parsePrometheusTextFormat(text) as Family[]).map((family) => [family.name, family]))
}
const counter = (families: Map<string, Family>, name: string, label?: Record<string, string>) =>
  Number(families.get(name)?.metrics.find((m) => !label || Object.entries(label).every(([k, v]) => m.labels?.[k] === v))?.value ?? 0)

async function get(port: number, path: string): Promise<{ status: number; body: any }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`)
  return { status: response.status, body: await response.json() }
}

describe('HTTP health and metrics', () => {
  it('/metrics shows the counters moving; /healthz and /readyz answer 200 while healthy', async () => {
    const port = await freePort()
    replicas.push(startReplica(['--handlers', fixturePath('record-handler.js'), '--http', String(port), '--interval-max', '500ms'], { DATABASE_URL: server.url, RECORD_FILE: '/dev/null', FAIL_ENTITY_ID: '3' }))
    await waitFor('ready', async () => (await get(port, '/readyz').catch(() => ({ status: 0 }))).status === 200, 20_000)
    await waitFor('healthy', async () => (await get(port, '/healthz')).status === 200)
    expect(await get(port, '/healthz')).toEqual({ status: 200, body: { status: 'ok' } })
    const before = await scrape(port)
    expect(counter(before, 'outbox_events_handled_total', { event_type: 'item.created' })).toBe(0)
    await sql`insert into items select n, 'item ' || n from generate_series(1, 50) n`
    await waitFor('49 handled in the metrics', async () => counter(await scrape(port), 'outbox_events_handled_total', { event_type: 'item.created' }) === 49)
    const after = await scrape(port)
    expect(counter(after, 'outbox_events_failed_total', { event_type: 'item.created' })).toBeGreaterThanOrEqual(1)
    expect(Number(after.get('outbox_commit_to_handler_seconds')!.metrics[0]!.count)).toBeGreaterThanOrEqual(50)
    expect(Number(after.get('outbox_batch_size')!.metrics[0]!.count)).toBeGreaterThanOrEqual(1)
    expect(after.has('outbox_pending_events')).toBe(true)
    expect(after.has('outbox_worker_restarts_total')).toBe(true)
    expect((await get(port, '/nope')).status).toBe(404)
  })

  it('/healthz goes 503 with a reason when the poll loop is stuck', async () => {
    const port = await freePort()
    const replica = startReplica(['--handlers', fixturePath('stuck-handler.js'), '--http', String(port), '--handler-timeout', '1s', '--interval-max', '500ms'], { DATABASE_URL: server.url, STUCK_MS: '30000' })
    replicas.push(replica)
    await waitFor('healthy first', async () => (await get(port, '/healthz').catch(() => ({ status: 0 }))).status === 200, 20_000)
    await sql`insert into items values (1000, 'stuck')`
    const unhealthy = await waitFor('503', async () => {
      const health = await get(port, '/healthz')
      return health.status === 503 ? health : undefined
    }, 20_000, 250)
    expect(unhealthy.body).toMatchObject({ status: 'unavailable', reason: expect.stringMatching(/the poll loop has not finished a claim for \d+ s/) })
    // the stuck worker cannot even hear its supervisor: end it, so its batch rolls back
    for (const [, pid] of replica.output().matchAll(/"worker_pid":(\d+),"msg":"worker started"/g)) process.kill(Number(pid), 'SIGKILL')
    await sql`delete from outbox`
  })

  it('a captured table dropped and re-created is reported in the /healthz body and the metrics, without a 503', async () => {
    await sql`create table carts (id int primary key)`
    await captureTable(sql, outboxTable('public', 'outbox'), { table: 'carts', entity: 'cart' })
    await sql`drop table carts`
    await sql`create table carts (id int primary key)`
    const port = await freePort()
    replicas.push(startReplica(['--handlers', fixturePath('record-handler.js'), '--http', String(port), '--interval-max', '500ms'], { DATABASE_URL: server.url, RECORD_FILE: '/dev/null' }))
    const health = await waitFor('a healthy replica that warns', async () => {
      const answer = await get(port, '/healthz').catch(() => ({ status: 0, body: {} }))
      return answer.status === 200 && answer.body.warnings ? answer : undefined
    }, 20_000, 250)
    // the server's long transactions, if any, are warned about too: this one is the file's own
    expect(health.body.status).toBe('ok')
    expect(health.body.warnings).toContain('captured table carts was dropped and re-created without its capture triggers: its changes are not captured; capture it again: outbox-poller capture carts --entity cart --key id')
    const families = await scrape(port)
    expect(counter(families, 'outbox_captured_tables_lost')).toBe(1)
    expect(counter(families, 'outbox_captured_table_lost', { table: 'carts', problem: 'recreated' })).toBe(1)
    await captureTable(sql, outboxTable('public', 'outbox'), { table: 'carts', entity: 'cart' })
  })

  it('a port already in use is a clear configuration error', async () => {
    const busy = createServer().listen(0, '127.0.0.1')
    await new Promise((resolve) => busy.once('listening', resolve))
    const port = (busy.address() as { port: number }).port
    const result = await runCli(['--handlers', fixturePath('record-handler.js'), '--http', `127.0.0.1:${port}`], { DATABASE_URL: server.url })
    busy.close()
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(new RegExp(`--http 127.0.0.1:${port}: .*EADDRINUSE`))
    expect((await runCli(['--handlers', fixturePath('record-handler.js'), '--http', 'localhost:99999'], { DATABASE_URL: server.url })).stderr).toMatch(/--http must be host:port or a port between 1 and 65535/)
  })

  // last: it stops this file's own database
  it('/healthz goes 503 when the database stops answering', async () => {
    const port = await freePort()
    replicas.push(startReplica(['--handlers', fixturePath('record-handler.js'), '--http', String(port)], { DATABASE_URL: server.url, RECORD_FILE: '/dev/null' }))
    await waitFor('healthy first', async () => (await get(port, '/healthz').catch(() => ({ status: 0 }))).status === 200, 20_000)
    await sql.end({ timeout: 1 })
    await server.stop()
    const unhealthy = await waitFor('503', async () => {
      const health = await get(port, '/healthz')
      return health.status === 503 ? health : undefined
    }, 20_000, 250)
    expect(unhealthy.body.reason).toMatch(/^database: /)
  })
})
