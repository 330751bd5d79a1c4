import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { grantPollerRole } from '../../src/outbox/grant.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { binPath, fixturePath, killReplicas, type Replica, runCli, startReplica } from '../support/cli.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { waitFor } from '../support/wait-for.js'

let db: TestDatabase
const role = `outbox_limited_${randomBytes(4).toString('hex')}`
const replicas: Replica[] = []
const handlers = ['--handlers', fixturePath('record-handler.js')]

beforeAll(async () => {
  db = await createTestDatabase()
  // A role of this file's own: its CONNECTION LIMIT gives "too many connections" (53300) and touches no other test.
  await db.sql.unsafe(`create role ${role} login password 'pw' connection limit 0`)
  await grantPollerRole(db.sql, outboxTable('public', 'outbox'), { role })
})
afterAll(async () => {
  await killReplicas(replicas)
  await db.sql.unsafe(`drop owned by ${role}`)
  await db.sql.unsafe(`drop role ${role}`)
  await db.drop()
})

function urlAs(user: string, query = ''): string {
  const url = new URL(db.url)
  url.username = user
  url.password = user === 'postgres' ? url.password : 'pw' // the embedded server asks for passwords
  return `${url.toString()}${query}`
}

/** A user mistake: exit 2, exactly one line on stderr, no stack trace. */
function expectOneLineConfigError(result: { code: number | null; stderr: string }, message: RegExp, label?: string) {
  expect(result.stderr, label).toMatch(message)
  expect(result.code, label).toBe(2)
  expect(result.stderr.trim().split('\n'), label).toHaveLength(1)
}

describe('a malformed connection string', () => {
  const commands = [['run', ...handlers], ['migrate'], ['capture', 't', '--entity', 't'], ['uncapture', 't'], ['captures'], ['grant', 'r'], ['status'], ['dead'], ['replay', '--dead'], ['cleanup', '--older-than', '7d'], ['demo'], ['bench']]

  it('is one line naming DATABASE_URL, without the password, exit 2, for every command that takes a URL', async () => {
    const results = await Promise.all(commands.map((args) => runCli(args, { DATABASE_URL: 'postgres://app:s3cret@127.0.0.1:99999/app' })))
    for (const [index, result] of results.entries()) {
      expectOneLineConfigError(result, /^outbox-poller: DATABASE_URL has port 99999: a port is between 1 and 65535\n$/, commands[index]!.join(' '))
      expect(result.stdout + result.stderr).not.toContain('s3cret')
    }
  })

  it('names --database-url when the URL was given as a flag', async () => {
    expectOneLineConfigError(await runCli(['status', '--database-url', 'postgres://app:s3cret@[::1/app']), /^outbox-poller: --database-url is not a valid URL/)
  })
})

describe('connecting at start', () => {
  it('"too many connections" is retried within --connect-timeout, and the poller starts once a slot is free', async () => {
    await db.sql.unsafe(`alter role ${role} connection limit 0`)
    const replica = startReplica([...handlers, '--no-supervise', '--connect-timeout', '60s'], { DATABASE_URL: urlAs(role) })
    replicas.push(replica)
    await waitFor('a retry after "too many connections"', () => /too many connections.*database unreachable, retrying/.test(replica.output()))
    await db.sql.unsafe(`alter role ${role} connection limit -1`)
    await waitFor('poller started', () => replica.output().includes('poller started'))
    replica.child.kill('SIGTERM')
    expect((await replica.exited).code).toBe(0)
  })

  it('"too many connections" that outlasts --connect-timeout ends with the host, port and database, exit 1', async () => {
    await db.sql.unsafe(`alter role ${role} connection limit 0`)
    const result = await runCli([...handlers, '--no-supervise', '--connect-timeout', '1s'], { DATABASE_URL: urlAs(role) })
    expect(result.code).toBe(1)
    const database = new URL(db.url).pathname.slice(1)
    expect(result.stderr).toMatch(new RegExp(`^outbox-poller: cannot connect to 127\\.0\\.0\\.1:${new URL(db.url).port || 5432}/${database}: too many connections for role "${role}" \\(gave up after 1 s\\)\\n$`))
    expect(result.stdout).toMatch(/database unreachable, retrying/)
  })

  it('sslmode=require against a server without TLS fails at once as a configuration error, supervised or not', async (context) => {
    const [{ ssl }] = await db.sql<{ ssl: string }[]>`select current_setting('ssl') as ssl`
    if (ssl === 'on') context.skip()
    const url = urlAs('postgres', '?sslmode=require')
    const message = new RegExp(`^outbox-poller: cannot connect to 127\\.0\\.0\\.1:${new URL(db.url).port || 5432}/\\w+: the connection string asks for sslmode=require, but the server does not offer TLS`)
    expectOneLineConfigError(await runCli(['migrate'], { DATABASE_URL: url }), message)
    const alone = await runCli([...handlers, '--no-supervise', '--connect-timeout', '60s'], { DATABASE_URL: url })
    expect(alone.code).toBe(2)
    expect(alone.stderr).toMatch(message)
    expect(alone.stdout).not.toMatch(/retrying/)
    const supervised = await runCli([...handlers, '--connect-timeout', '60s'], { DATABASE_URL: url })
    expect(supervised.code).toBe(2)
    expect(supervised.stdout).not.toMatch(/retrying/)
  })
})

describe('a closed stdout', () => {
  /**
   * Runs the CLI and closes its stdout once `linesRead` lines arrived (0: before it writes), like
   * `outbox-poller … | head -1` once head has exited.
   */
  function runWithClosedStdout(args: string[], env: Record<string, string> = {}, linesRead = 0): Promise<{ code: number | null; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [binPath, ...args], { env: { PATH: process.env.PATH ?? '', ...env } })
      let stdout = ''
      if (linesRead === 0) child.stdout.destroy()
      else child.stdout.on('data', (chunk) => (stdout += chunk).split('\n').length > linesRead && child.stdout.destroy())
      let stderr = ''
      child.stderr.on('data', (chunk) => (stderr += chunk))
      child.on('error', reject)
      child.on('close', (code) => resolve({ code, stderr }))
    })
  }

  it('ends the command quietly with exit 0: --help, and a command reading the database', async () => {
    for (const result of [await runWithClosedStdout(['--help']), await runWithClosedStdout(['captures', '--json'], { DATABASE_URL: db.url })]) {
      expect(result.stderr).toBe('')
      expect(result.code).toBe(0)
    }
  })

  it('interrupts demo as Ctrl-C does: it stops its replicas and drops its schema, exit 0', async () => {
    const result = await runWithClosedStdout(['demo', '--duration', '20s', '--burst', '100', '--rate', '20', '--replicas', '1'], { DATABASE_URL: db.url }, 1)
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    expect(await db.sql`select nspname from pg_namespace where nspname like 'outbox_demo_%'`).toHaveLength(0)
  }, 60_000)
})
