import { readFile } from 'node:fs/promises'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { fixturePath, type Replica } from '../support/cli.js'
import { listenNotifySocket, type NotifySocket } from '../support/notify-socket.js'
import { processSuite } from '../support/process-suite.js'
import { waitFor } from '../support/wait-for.js'

// systemd's notify protocol, with the test as systemd: READY=1 once the worker polls, WATCHDOG=1 while its
// poll loop iterates (even when every claim fails), none once it hangs.
const s = processSuite('watchdog')
let socket: NotifySocket
beforeEach(async () => {
  socket = await listenNotifySocket()
})
afterEach(async () => {
  await socket.close()
})

/** WATCHDOG_USEC of 1 s: a ping every 500 ms. */
const watchdogEnv = () => ({ NOTIFY_SOCKET: socket.path, WATCHDOG_USEC: '1000000', RECORD_FILE: '/dev/null' })
const fastLoop = ['--interval-min', '50ms', '--interval-max', '500ms', '--handler-timeout', '1s', '--drain-timeout', '2s']
const texts = () => socket.messages.map((message) => message.text)
const pingsAfter = (at: number) => socket.messages.filter((message) => message.text === 'WATCHDOG=1' && message.at > at).length
const workerPids = (output: string) => [...output.matchAll(/"worker_pid":(\d+),"msg":"worker started"/g)].map((match) => Number(match[1]))

/** Waits for a log line of the replica; a timeout shows the end of its output. */
async function waitForOutput(replica: Replica, what: string, pattern: RegExp, timeoutMs: number): Promise<void> {
  await waitFor(what, () => pattern.test(replica.output()), timeoutMs, 50).catch((error: Error) => {
    throw new Error(`${error.message}; output: ${replica.output().slice(-2000)}`)
  })
}

/** SIGKILL to the supervisor and its workers: a worker left alone would drain through a cut proxy first. */
async function endReplica(replica: Replica): Promise<void> {
  for (const pid of workerPids(replica.output())) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // already gone
    }
  }
  if (replica.child.exitCode === null && replica.child.signalCode === null) replica.child.kill('SIGKILL')
  await replica.exited
}

/** A TCP proxy to the test database that the test can cut (refusing connections) and restore. */
async function databaseProxy(): Promise<{ url: string; cut: () => Promise<void>; restore: () => Promise<void>; close: () => Promise<void> }> {
  const target = new URL(s.db.url)
  const sockets = new Set<Socket>()
  let server: Server | undefined
  const listen = (port: number) =>
    new Promise<number>((resolve) => {
      server = createServer((client) => {
        const upstream = connect(Number(target.port || 5432), target.hostname)
        for (const end of [client, upstream]) {
          sockets.add(end)
          end.on('error', () => {})
          end.on('close', () => {
            sockets.delete(end)
            client.destroy()
            upstream.destroy()
          })
        }
        client.pipe(upstream).pipe(client)
      }).listen(port, '127.0.0.1', () => resolve((server!.address() as { port: number }).port))
    })
  const port = await listen(0)
  const cut = async () => {
    await new Promise<void>((resolve) => {
      server!.close(() => resolve())
      for (const end of sockets) end.destroy()
    })
  }
  const url = new URL(s.db.url)
  url.hostname = '127.0.0.1'
  url.port = String(port)
  return { url: url.toString(), cut, restore: async () => void (await listen(port)), close: cut }
}

describe('systemd readiness and watchdog (NOTIFY_SOCKET)', () => {
  it('READY=1 only once the worker polls (not while it waits for the database), then WATCHDOG=1 while it is idle', async () => {
    const proxy = await databaseProxy()
    await proxy.cut() // the database is unreachable when the replica starts
    const replica = s.start(['--handlers', fixturePath('record-handler.js'), ...fastLoop], { ...watchdogEnv(), DATABASE_URL: proxy.url })
    try {
      await waitForOutput(replica, 'the worker retrying the database', /database unreachable, retrying/, 20_000)
      expect(texts()).not.toContain('READY=1')
      await proxy.restore()
      const ready = await waitFor('READY=1', () => socket.messages.find((message) => message.text === 'READY=1'), 30_000, 50)
      await waitForOutput(replica, 'the worker polling', /"msg":"poller started"/, 5_000)
      await waitFor('three watchdog pings after READY=1', () => pingsAfter(ready.at) >= 3, 20_000, 50)
      expect(texts().filter((text) => text === 'READY=1')).toHaveLength(1)
    } finally {
      await endReplica(replica)
      await proxy.close()
    }
  })

  it('keeps pinging through a database outage: a claim that fails is an iteration, not a hang; once the database is back it drains', async () => {
    const proxy = await databaseProxy()
    const replica = s.start(['--handlers', fixturePath('record-handler.js'), ...fastLoop], { ...watchdogEnv(), DATABASE_URL: proxy.url })
    try {
      await waitFor('READY=1', () => texts().includes('READY=1'), 30_000, 50)
      await proxy.cut()
      const outageAt = Date.now()
      // the claim fails, not waits: postgres.js would wait up to 20 s before reconnecting after the LISTEN
      // connection's failed retries, and a claim hung that long is a loop that stopped iterating
      await waitForOutput(replica, 'claims failing', /connection lost|batch failed/, 10_000)
      // With --drain-timeout 2s a loop that claims is allowed 7 s between reports; the failing claims back off
      // 50 ms doubling, so from about 13 s into the outage they are 13 s apart. Pings 21 s in prove the
      // backoff after a failed claim is allowed for.
      await waitFor('a ping 21 s into the outage', () => socket.messages.some((message) => message.text === 'WATCHDOG=1' && message.at > outageAt + 21_000), 40_000, 250)
      expect(replica.output()).not.toContain('has stopped iterating')
      // the database back: the next claim (at most 30 s of backoff away) takes what was written meanwhile
      await s.db.sql`insert into items values (7, 'after the outage')`
      await proxy.restore()
      await waitFor('the event written during the outage handled', async () => (await s.db.sql`select count(*)::int as n from outbox where processed_at is not null`)[0]!.n === 1, 40_000, 250)
    } finally {
      await endReplica(replica)
      await proxy.close()
    }
  }, 120_000)

  it('stops pinging when the worker hangs (a handler blocks its event loop)', async () => {
    const replica = s.start(['--handlers', fixturePath('stuck-handler.js'), ...fastLoop], { ...watchdogEnv(), STUCK_MS: '60000' })
    try {
      const ready = await waitFor('READY=1', () => socket.messages.find((message) => message.text === 'READY=1'), 30_000, 50)
      await waitFor('pings while idle', () => pingsAfter(ready.at) >= 2, 20_000, 50)
      await s.db.sql`insert into items values (1, 'stuck')`
      await waitForOutput(replica, 'the supervisor saying it stopped pinging', /the worker's poll loop has stopped iterating/, 30_000)
      const stoppedAt = Date.now()
      // eight ping intervals without a ping: the watchdog would have fired
      await waitFor('no ping for 4 s', () => Date.now() - Math.max(stoppedAt, ...socket.messages.map((message) => message.at)) > 4_000, 20_000, 250)
      expect(replica.child.exitCode).toBeNull() // the supervisor runs on: ending the replica is systemd's call
    } finally {
      await endReplica(replica) // the stuck worker cannot even hear its supervisor
    }
  }, 90_000)

  it('a worker run alone (--no-supervise) notifies systemd itself', async () => {
    const replica = s.start(['--handlers', fixturePath('record-handler.js'), '--no-supervise', ...fastLoop], watchdogEnv())
    const ready = await waitFor('READY=1', () => socket.messages.find((message) => message.text === 'READY=1'), 30_000, 50)
    await waitForOutput(replica, 'the worker polling', /"msg":"poller started"/, 5_000)
    await waitFor('three watchdog pings', () => pingsAfter(ready.at) >= 3, 20_000, 50)
  })

  it('the worker does not inherit NOTIFY_SOCKET: only the unit\'s main process talks to systemd', async () => {
    const file = join(s.directory, 'notify-env.log')
    s.start(['--handlers', fixturePath('notify-env-handler.js'), ...fastLoop], { ...watchdogEnv(), RECORD_FILE: file })
    await waitFor('READY=1', () => texts().includes('READY=1'), 30_000, 50)
    await s.db.sql`insert into items values (2, 'handled')`
    const seen = await waitFor('the handler ran', async () => (await readFile(file, 'utf8').catch(() => '')).trim(), 20_000, 50)
    expect(JSON.parse(seen)).toEqual({})
  })
})
