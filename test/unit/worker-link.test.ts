import { describe, expect, it, vi } from 'vitest'
import { silentLogger } from '../../src/log.js'
import { MemoryWatch } from '../../src/supervisor/memory-watch.js'
import { StopRequests } from '../../src/supervisor/stop-requests.js'
import { type SupervisorChannel, WorkerLink } from '../../src/supervisor/worker-link.js'
import type { SupervisorMessage, WorkerMessage } from '../../src/supervisor/worker-protocol.js'

function fakeChannel() {
  const sent: WorkerMessage[] = []
  const listeners: { message?: (message: SupervisorMessage) => void; disconnect?: () => void } = {}
  const channel: SupervisorChannel & { connected: boolean } = {
    connected: true,
    send: (message, done) => {
      sent.push(message)
      done()
    },
    onMessage: (listener) => (listeners.message = listener),
    onDisconnect: (listener) => (listeners.disconnect = listener),
  }
  return { channel, sent, listeners }
}

describe('the worker link', () => {
  it('announces ids before dispatch, reports settled batches, and sends at most one heartbeat a second while idle', async () => {
    const { channel, sent } = fakeChannel()
    const link = new WorkerLink(channel)
    await link.hooks.beforeDispatch(['1', '2'], [])
    link.hooks.afterBatch({ claimed: 2, committed: true } as never)
    link.hooks.afterBatch({ claimed: 0, committed: true } as never)
    link.hooks.afterBatch({ claimed: 0, committed: true } as never)
    link.ready()
    expect(sent.map((message) => message.type)).toEqual(['dispatching', 'settled', 'heartbeat', 'ready'])
    // a failed claim always reports, so the supervisor knows the loop is backing off, not hung
    link.hooks.afterBatch({ claimed: 0, committed: false } as never)
    link.hooks.afterBatch({ claimed: 0, committed: false } as never)
    expect(sent.slice(4)).toEqual([{ type: 'heartbeat', claimFailed: true }, { type: 'heartbeat', claimFailed: true }])
    channel.connected = false
    await link.hooks.beforeDispatch(['3'], []) // a gone supervisor never blocks the dispatch
    expect(sent).toHaveLength(6)
  })

  it("turns the supervisor's drain, force and disappearance into stop requests", () => {
    const { channel, listeners } = fakeChannel()
    const requests: Array<[string, boolean]> = []
    new WorkerLink(channel).onStopRequest((why, force) => requests.push([why, force]))
    listeners.message!({ type: 'drain', reason: 'memory' })
    listeners.message!({ type: 'force' })
    listeners.disconnect!()
    expect(requests).toEqual([['supervisor: memory', false], ['supervisor: force', true], ['supervisor gone', false]])
  })
})

describe('stop requests', () => {
  it('the first signal drains, a drain request meanwhile changes nothing, the second signal forces', () => {
    const stops: Array<{ force?: boolean } | undefined> = []
    const onForce = vi.fn()
    const requests = new StopRequests({ stop: async (options) => void stops.push(options) }, silentLogger, onForce)
    requests.signal('SIGTERM')
    requests.request('supervisor: signal')
    expect(stops).toEqual([undefined])
    requests.signal('SIGTERM')
    expect(stops).toEqual([undefined, { force: true }])
    expect(onForce).toHaveBeenCalledOnce()
  })
})

describe('memory watch', () => {
  it('reports every sample and calls onOver only above the limit; a failed sample is skipped', async () => {
    const samples: number[] = []
    const over: number[] = []
    let rss: number | Error = 50 * 1_048_576
    const watch = new MemoryWatch({
      limitMb: 100,
      intervalMs: 1000,
      target: () => 'me',
      rss: () => (rss instanceof Error ? Promise.reject(rss) : rss),
      onSample: (bytes) => samples.push(bytes),
      onOver: (_, mb) => over.push(mb),
    })
    await watch.check()
    rss = 150 * 1_048_576
    await watch.check()
    rss = new Error('gone')
    await watch.check()
    expect(samples).toEqual([50 * 1_048_576, 150 * 1_048_576])
    expect(over).toEqual([150])
  })
})
