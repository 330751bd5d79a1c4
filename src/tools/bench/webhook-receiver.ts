import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

/** A local webhook endpoint for the bench. */
export interface BenchReceiver {
  url: string
  /** Requests answered so far. */
  readonly requests: number
  close(): Promise<void>
}

/**
 * The least a webhook endpoint can do: read the request and answer 204, keeping the connection alive. No
 * signature check: the bench measures the sender.
 */
export async function startBenchReceiver(): Promise<BenchReceiver> {
  let requests = 0
  const server = createServer((incoming, response) => {
    incoming.resume()
    incoming.on('end', () => {
      requests++
      response.writeHead(204).end()
    })
  })
  server.keepAliveTimeout = 60_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/outbox`,
    get requests() {
      return requests
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve()) && server.closeAllConnections()),
  }
}
