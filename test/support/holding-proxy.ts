import { createServer, connect, type Server, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'

/**
 * A TCP proxy in front of a real broker that can hold the broker's answers on the connections open now: what
 * the client sends still reaches the broker (it stores the messages), but its confirms stay in the proxy, so a
 * test decides when a batch's confirms come back. Connections opened later (a restarted worker's) pass freely. `cut` closes every connection and refuses new ones: an outage of the broker as
 * its clients see it, without touching the broker other tests share.
 */
export interface HoldingProxy {
  /** host:port of the proxy. */
  readonly address: string
  /** Keeps the broker's answers on the connections open now, from now on. */
  hold(): void
  /** Passes what was held, and everything after it. */
  release(): void
  /** Closes every connection, dropping what was held; new connections are refused until `restore`. */
  cut(): void
  restore(): void
  close(): Promise<void>
}

export async function startHoldingProxy(target: { host: string; port: number }): Promise<HoldingProxy> {
  let refusing = false
  const pairs = new Set<{ client: Socket; broker: Socket; held: Buffer[] | undefined }>()
  const server: Server = createServer((client) => {
    if (refusing) return void client.destroy()
    const broker = connect(target.port, target.host)
    const pair = { client, broker, held: undefined as Buffer[] | undefined }
    pairs.add(pair)
    client.on('data', (chunk: Buffer) => broker.write(chunk))
    broker.on('data', (chunk: Buffer) => (pair.held === undefined ? client.write(chunk) : pair.held.push(chunk)))
    const end = () => {
      pairs.delete(pair)
      client.destroy()
      broker.destroy()
    }
    client.on('close', end).on('error', end)
    broker.on('close', end).on('error', end)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const destroyAll = () => {
    for (const pair of [...pairs]) {
      pair.client.destroy()
      pair.broker.destroy()
    }
  }
  return {
    address: `127.0.0.1:${port}`,
    hold() {
      for (const pair of pairs) pair.held ??= []
    },
    release() {
      for (const pair of pairs) {
        const held = pair.held ?? []
        pair.held = undefined
        for (const chunk of held) pair.client.write(chunk)
      }
    },
    cut() {
      refusing = true
      destroyAll()
    },
    restore: () => void (refusing = false),
    close() {
      destroyAll()
      return new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
