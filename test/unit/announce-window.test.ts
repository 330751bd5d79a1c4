import { describe, expect, it } from 'vitest'
import { AnnounceWindow } from '../../src/poller/announce-window.js'
import type { ClaimedEvent } from '../../src/poller/claimed-event.js'

const rows = (n: number) => Array.from({ length: n }, (_, i) => ({ id: String(i + 1) }) as ClaimedEvent)

describe('announce window', () => {
  it('announces the first window before any event starts, the next one from its middle, with the events finished by then', async () => {
    const calls: Array<{ ids: string[]; finished: string[] }> = []
    const window = new AnnounceWindow((ids, finished) => void calls.push({ ids, finished }), 4)
    const batch = window.open(rows(10), () => {})
    await batch.ready(0)
    expect(calls[0]).toEqual({ ids: ['1', '2', '3', '4'], finished: [] })
    for (let i = 0; i < 4; i++) {
      const ready = batch.ready(i)
      if (ready !== undefined) await ready
      batch.finished(String(i + 1))
    }
    const next = batch.ready(4)
    if (next !== undefined) await next
    // the next window went out once the dispatch reached the middle of the first, with what had finished by then
    expect(calls[1]!.ids[0]).toBe('5')
    expect(calls[1]!.finished).toEqual(['1', '2', '3', '4'])
    window.close(batch)
  })

  it('doubles the window when the dispatch waits, and halves it back after four calm batches', async () => {
    const window = new AnnounceWindow(() => new Promise((resolve) => setImmediate(resolve)), 2)
    const waiting = window.open(rows(8), () => {})
    for (let i = 0; i < 8; i++) {
      const ready = waiting.ready(i)
      if (ready !== undefined) await ready
    }
    expect(waiting.waited).toBe(true)
    const grown = waiting.size
    expect(grown).toBeGreaterThan(2)
    window.close(waiting)
    const sizes: number[] = []
    for (let batch = 0; batch < 4; batch++) {
      const calm = window.open(rows(1), () => {})
      await calm.ready(0)
      sizes.push(calm.size)
      window.close(calm)
    }
    expect(sizes[0]).toBe(grown)
    expect(window.open(rows(1), () => {}).size).toBe(grown >> 1)
  })

  it('reports a failed announcement: nothing past it may start', async () => {
    const failures: unknown[] = []
    const window = new AnnounceWindow(() => Promise.reject(new Error('ipc closed')), 2)
    const batch = window.open(rows(4), (error) => failures.push(error))
    await batch.ready(0)
    expect(failures).toHaveLength(1)
  })
})
