import { EventEmitter } from 'node:events'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { silentLogger } from '../../src/log.js'
import type { CrashCharge } from '../../src/supervisor/crash-charge.js'
import { ExitCode } from '../../src/supervisor/exit-codes.js'
import { Supervisor, type WorkerProcess } from '../../src/supervisor/supervisor.js'
import { resolveSupervisorOptions, type SupervisorOptions } from '../../src/supervisor/supervisor-options.js'
import type { SupervisorMessage, WorkerMessage } from '../../src/supervisor/worker-protocol.js'

/** A worker process as the supervisor sees it: messages in, messages out, an exit. */
class FakeWorker extends EventEmitter {
  static nextPid = 1000
  readonly pid = FakeWorker.nextPid++
  connected = true
  readonly sent: SupervisorMessage[] = []
  rss = 10 * 1_048_576

  send(message: SupervisorMessage, callback?: (error: Error | null) => void): boolean {
    this.sent.push(message)
    callback?.(null)
    return true
  }

  kill(signal?: NodeJS.Signals): boolean {
    queueMicrotask(() => this.exit(null, signal ?? 'SIGTERM'))
    return true
  }

  report(message: WorkerMessage): void {
    this.emit('message', message)
  }

  exit(code: number | null, signal: NodeJS.Signals | null = null): void {
    if (!this.connected) return
    this.connected = false
    this.emit('exit', code, signal)
  }
}

let workers: FakeWorker[]
let charges: Array<{ pid: number | undefined; batches: ReadonlyArray<readonly string[]>; error: string }>

function supervisor(options: SupervisorOptions = {}, chargeResult = true, onReady?: () => void): Supervisor {
  const crashCharge: CrashCharge = {
    charge: async (pid, batches, error) => {
      if (batches.length === 0) return false
      charges.push({ pid, batches, error })
      return chargeResult
    },
    close: async () => {},
  }
  return new Supervisor({
    options: resolveSupervisorOptions({ memoryLimitMb: 100, memoryCheckInterval: 1000, ...options }),
    crashCharge,
    log: silentLogger,
    onReady,
    sampleRss: async (pid) => workers.find((worker) => worker.pid === pid)!.rss,
    spawnWorker: () => {
      const worker = new FakeWorker()
      workers.push(worker)
      return worker as unknown as WorkerProcess
    },
  })
}

const alive = () => workers.filter((worker) => worker.connected)

beforeEach(() => {
  vi.useFakeTimers()
  workers = []
  charges = []
})
afterEach(() => {
  vi.useRealTimers()
})

describe('supervisor (fake worker processes)', () => {
  it("the worker's loop counts as alive while it reports (longer after a failed claim) and between a crash and its restart", async () => {
    const allowances = { startingMs: 10_000, pollingMs: 1_000, failingMs: 5_000 }
    let readies = 0
    const s = supervisor({}, true, () => readies++)
    s.start()
    expect(s.loopAlive(allowances)).toBe(true) // starting
    await vi.advanceTimersByTimeAsync(10_001)
    expect(s.loopAlive(allowances)).toBe(false) // not polling within the start-up allowance
    workers[0]!.report({ type: 'ready' })
    expect(readies).toBe(1)
    expect(s.loopAlive(allowances)).toBe(true)
    await vi.advanceTimersByTimeAsync(1_001)
    expect(s.loopAlive(allowances)).toBe(false)
    workers[0]!.report({ type: 'heartbeat', claimFailed: true })
    await vi.advanceTimersByTimeAsync(4_000)
    expect(s.loopAlive(allowances)).toBe(true) // backing off after a failed claim
    workers[0]!.report({ type: 'dispatching', ids: ['1'], finished: [] })
    await vi.advanceTimersByTimeAsync(1_001)
    expect(s.loopAlive(allowances)).toBe(false) // a batch that stopped reporting
    workers[0]!.exit(1)
    await vi.advanceTimersByTimeAsync(100)
    expect(s.loopAlive(allowances)).toBe(true) // the restart's backoff is no hang
    await vi.advanceTimersByTimeAsync(200)
    expect(workers).toHaveLength(2)
    workers[1]!.report({ type: 'ready' })
    expect(readies).toBe(2)
    s.stop()
    workers[1]!.exit(0)
    expect(await s.done).toBe(ExitCode.ok)
  })

  it('a crash is charged to the events announced and not finished, then the worker is restarted', async () => {
    const s = supervisor()
    s.start()
    workers[0]!.report({ type: 'ready' })
    workers[0]!.report({ type: 'dispatching', ids: ['1', '2', '3'], finished: [] })
    workers[0]!.report({ type: 'dispatching', ids: ['4'], finished: ['1', '3'] })
    workers[0]!.exit(1)
    await vi.advanceTimersByTimeAsync(300)
    expect(charges).toEqual([{ pid: workers[0]!.pid, batches: [['2', '4']], error: 'worker died (exit code 1) while handling this event' }])
    expect(workers).toHaveLength(2)
    expect(s.restarts.crash).toBe(1)
    s.stop()
    workers[1]!.exit(0)
    expect(await s.done).toBe(ExitCode.ok)
  })

  it('with two overlapping batches, a settled one forgets only its own suspects: a crash charges the other batch in flight', async () => {
    const s = supervisor()
    s.start()
    workers[0]!.report({ type: 'ready' })
    workers[0]!.report({ type: 'dispatching', ids: ['1', '2'], finished: [] })
    workers[0]!.report({ type: 'dispatching', ids: ['3', '4'], finished: [], lane: 1 })
    workers[0]!.report({ type: 'settled', report: { claimed: 2, committed: true } as never }) // the first lane's batch
    workers[0]!.report({ type: 'dispatching', ids: ['5'], finished: [] })
    workers[0]!.report({ type: 'dispatching', ids: [], finished: ['3'], lane: 1 })
    workers[0]!.exit(1)
    await vi.advanceTimersByTimeAsync(300)
    expect(charges).toEqual([{ pid: workers[0]!.pid, batches: [['5'], ['4']], error: 'worker died (exit code 1) while handling this event' }])
    s.stop()
    workers[1]!.exit(0)
    expect(await s.done).toBe(ExitCode.ok)
  })

  it('with two overlapping batches, the batch is in hand until both settled: an exit 0 with the other still in hand is a crash charged to it', async () => {
    const s = supervisor()
    s.start()
    workers[0]!.report({ type: 'ready' })
    workers[0]!.report({ type: 'dispatching', ids: ['1'], finished: [] })
    workers[0]!.report({ type: 'dispatching', ids: ['2'], finished: [], lane: 1 })
    workers[0]!.report({ type: 'settled', report: { claimed: 1, committed: true } as never })
    workers[0]!.exit(0)
    await vi.advanceTimersByTimeAsync(300)
    expect(charges).toEqual([{ pid: workers[0]!.pid, batches: [['2']], error: 'worker died (exit code 0) while handling this event' }])
    s.stop()
    workers[1]!.exit(0)
    expect(await s.done).toBe(ExitCode.ok)
  })

  it('crashes charged to no event count toward the crash limit: at the limit the supervisor gives up with exit 1', async () => {
    const s = supervisor({ crashLimit: 2 })
    s.start()
    workers[0]!.report({ type: 'ready' })
    workers[0]!.exit(null, 'SIGSEGV')
    await vi.advanceTimersByTimeAsync(999)
    expect(workers).toHaveLength(1) // the first restart waits 1 s
    await vi.advanceTimersByTimeAsync(1)
    expect(workers).toHaveLength(2)
    workers[1]!.report({ type: 'ready' })
    workers[1]!.exit(1)
    expect(await s.done).toBe(ExitCode.failure)
    expect(s.failure).toMatch(/the worker crashed 2 times within 60 s \(last: exit code 1\); giving up/)
    expect(charges).toEqual([])
  })

  it('a crash charged to events does not count toward the crash limit', async () => {
    const s = supervisor({ crashLimit: 1 })
    s.start()
    workers[0]!.report({ type: 'ready' })
    workers[0]!.report({ type: 'dispatching', ids: ['7'], finished: [] })
    workers[0]!.exit(1)
    await vi.advanceTimersByTimeAsync(300)
    expect(workers).toHaveLength(2)
    expect(s.failure).toBeUndefined()
    s.stop()
    workers[1]!.exit(0)
    expect(await s.done).toBe(ExitCode.ok)
  })

  it("a worker that cannot start is not restarted: the supervisor ends with the worker's exit code", async () => {
    const s = supervisor()
    s.start()
    workers[0]!.exit(ExitCode.usage)
    expect(await s.done).toBe(ExitCode.usage)
    expect(workers).toHaveLength(1)
  })

  it('a stop drains the worker and charges nothing; a worker that stops by itself after draining is replaced, not charged', async () => {
    const s = supervisor()
    s.start()
    workers[0]!.report({ type: 'ready' })
    workers[0]!.report({ type: 'dispatching', ids: ['1'], finished: [] })
    workers[0]!.report({ type: 'settled', report: { claimed: 1, committed: true } as never })
    workers[0]!.exit(0) // e.g. its own SIGTERM
    await vi.advanceTimersByTimeAsync(300)
    expect(workers).toHaveLength(2)
    expect(s.restarts.signal).toBe(1)
    s.stop()
    expect(workers[1]!.sent).toEqual([{ type: 'drain', reason: 'signal' }])
    workers[1]!.exit(0)
    expect(await s.done).toBe(ExitCode.ok)
    expect(charges).toEqual([])
  })

  it('over the memory limit one worker drains beside the fresh one; a fresh worker over the limit waits for it', async () => {
    const s = supervisor({ memoryLimitMb: 100, memoryCheckInterval: 1000 })
    s.start()
    workers[0]!.report({ type: 'ready' })
    workers[0]!.rss = 200 * 1_048_576
    await vi.advanceTimersByTimeAsync(1000)
    expect(workers).toHaveLength(2)
    expect(workers[0]!.sent).toEqual([{ type: 'drain', reason: 'memory' }])
    // the fresh worker passes the limit while its predecessor still drains: held, no third worker
    workers[1]!.rss = 200 * 1_048_576
    await vi.advanceTimersByTimeAsync(3000)
    expect(workers).toHaveLength(2)
    expect(workers[1]!.sent).toEqual([])
    // once the predecessor has exited, the held worker is replaced at once
    workers[0]!.exit(0)
    await vi.advanceTimersByTimeAsync(0)
    expect(workers).toHaveLength(3)
    expect(workers[1]!.sent).toEqual([{ type: 'drain', reason: 'memory' }])
    expect(alive()).toHaveLength(2)
    expect(s.restarts.memory).toBe(2)
    s.stop()
    for (const worker of alive()) worker.exit(0)
    expect(await s.done).toBe(ExitCode.ok)
  })

  it('a worker still busy after the drain timeout is killed, and nothing is charged', async () => {
    const s = supervisor({ drainTimeout: 5000 })
    s.start()
    workers[0]!.report({ type: 'ready' })
    workers[0]!.report({ type: 'dispatching', ids: ['1'], finished: [] })
    s.stop()
    await vi.advanceTimersByTimeAsync(5000)
    expect(await s.done).toBe(ExitCode.ok)
    expect(workers[0]!.connected).toBe(false)
    expect(charges).toEqual([])
  })
})
