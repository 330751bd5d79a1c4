import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { fixturePath, type Replica } from '../support/cli.js'
import { idleTransactions, pendingEvents, processSuite } from '../support/process-suite.js'
import { waitFor } from '../support/wait-for.js'

const suite = processSuite('replicas')

function replica(recordFile: string, extraArgs: string[] = [], env: Record<string, string> = {}): Replica {
  return suite.start(['--handlers', fixturePath('record-handler.js'), '--interval-min', '20ms', '--interval-max', '200ms', '--log-level', 'info', ...extraArgs], { RECORD_FILE: recordFile, ...env })
}

async function recorded(file: string): Promise<Array<{ id: string; pid: string }>> {
  const text = await readFile(file, 'utf8').catch(() => '')
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id, , , pid] = line.split(' ')
      return { id: id!, pid: pid! }
    })
}

async function chargedEvents(): Promise<number> {
  const [row] = await suite.db.sql<{ n: number }[]>`select count(*)::int as n from outbox where attempts > 0`
  return row!.n
}

describe('replica processes', () => {
  it('three replicas drain 20,000 events, each handled exactly once', async () => {
    const file = join(suite.directory, 'three.log')
    await suite.db.sql`insert into items select n, 'item ' || n from generate_series(1, 20000) n`
    const started = [replica(file), replica(file), replica(file)]
    await waitFor('the outbox drained', async () => (await pendingEvents(suite.db)) === 0, 60_000, 100)
    const handled = await recorded(file)
    const ids = handled.map((h) => h.id)
    expect(ids).toHaveLength(20_000)
    expect(new Set(ids).size).toBe(20_000)
    // all three took part
    expect(new Set(handled.map((h) => h.pid)).size).toBe(3)
    for (const r of started) r.child.kill('SIGTERM')
    for (const r of started) expect(await r.exited).toEqual({ code: 0, signal: null })
  })

  it('a replica killed with SIGKILL mid-batch loses nothing: its batch goes to another replica', async () => {
    const file = join(suite.directory, 'kill.log')
    await suite.db.sql`insert into items select n, 'item ' || n from generate_series(1, 300) n`
    // slow handlers keep the victim's batch in flight when it dies
    const victim = replica(file, ['--batch-size', '100', '--concurrency', '4'], { HANDLER_DELAY_MS: '50' })
    await waitFor('the victim handling its batch', async () => (await recorded(file)).length > 5)
    victim.child.kill('SIGKILL')
    expect((await victim.exited).signal).toBe('SIGKILL')
    // the server notices the closed socket and rolls the victim's transaction back within moments
    await waitFor('the victim transaction rolled back', async () => (await idleTransactions(suite.db)) === 0, 5_000)
    expect(await pendingEvents(suite.db)).toBeGreaterThan(0)
    replica(file)
    await waitFor('the outbox drained', async () => (await pendingEvents(suite.db)) === 0, 30_000, 100)
    const ids = new Set((await recorded(file)).map((h) => h.id))
    expect(ids.size).toBe(300) // every event handled (some of the victim's twice: at-least-once)
    expect(await chargedEvents()).toBe(0)
  })

  it('SIGTERM finishes and commits the batch in hand, then exits 0', async () => {
    const file = join(suite.directory, 'term.log')
    await suite.db.sql`insert into items select n, 'item ' || n from generate_series(1, 40) n`
    const r = replica(file, ['--batch-size', '40', '--concurrency', '2'], { HANDLER_DELAY_MS: '50' })
    await waitFor('a batch in flight', async () => (await recorded(file)).length > 0)
    r.child.kill('SIGTERM')
    expect(await r.exited).toEqual({ code: 0, signal: null })
    expect(await pendingEvents(suite.db)).toBe(0)
    expect((await recorded(file)).length).toBe(40)
    expect(r.output()).toMatch(/"msg":"poller stopped"/)
  })

  it('a second SIGTERM forces the stop: the batch, events already handled included, rolls back with no attempt charged', async () => {
    const file = join(suite.directory, 'force.log')
    await suite.db.sql`insert into items select n, 'item ' || n from generate_series(1, 20) n`
    const r = replica(file, ['--batch-size', '20', '--concurrency', '1'], { HANDLER_DELAY_MS: '500' })
    // the handler's own record: the batch is claimed and one of its events was handled
    await waitFor('an event of the batch handled', async () => (await recorded(file)).length > 0)
    r.child.kill('SIGTERM')
    await waitFor('first signal logged', () => r.output().includes('finishing the batch in hand'))
    r.child.kill('SIGTERM')
    const exit = await r.exited
    expect(exit.code).toBe(0)
    expect((await recorded(file)).length).toBeLessThan(20)
    expect(await pendingEvents(suite.db)).toBe(20)
    expect(await chargedEvents()).toBe(0)
  })
})
