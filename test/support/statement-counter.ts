import { connect, createServer, type Server, type Socket } from 'node:net'

/**
 * A TCP relay in front of PostgreSQL that counts the statements its clients run: each simple Query ('Q') and
 * each Execute ('E') of the extended protocol (a prepared statement run again is one Execute, no Parse). What
 * a replica costs the database, counted on the wire: no extension (pg_stat_statements needs a server restart)
 * and no guess from timings.
 */
export interface StatementCounter {
  /** A database URL through the relay, otherwise `url`'s. */
  url: string
  /** Statements sent through the relay so far, every connection's. */
  readonly statements: number
  close(): Promise<void>
}

export async function countStatements(url: string): Promise<StatementCounter> {
  const target = new URL(url)
  const sockets = new Set<Socket>()
  let statements = 0
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname)
    sockets.add(client).add(upstream)
    for (const socket of [client, upstream]) socket.on('close', () => sockets.delete(socket)).on('error', () => {})
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    upstream.pipe(client)
    let started = false // the startup packet (and an SSL request before it) has no type byte
    let pending = Buffer.alloc(0)
    client.on('data', (chunk: Buffer) => {
      upstream.write(chunk)
      pending = Buffer.concat([pending, chunk])
      for (;;) {
        const header = started ? 5 : 4
        if (pending.length < header) break
        const length = started ? pending.readInt32BE(1) + 1 : pending.readInt32BE(0)
        if (pending.length < length) break
        if (!started) started = pending.readInt32BE(4) === 196608 // protocol 3.0, not an SSL or GSS request
        else if (pending[0] === 0x51 || pending[0] === 0x45) statements++
        pending = pending.subarray(length)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const relayed = new URL(url)
  relayed.hostname = '127.0.0.1'
  relayed.port = String((server.address() as { port: number }).port)
  return {
    url: relayed.toString(),
    get statements() {
      return statements
    },
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
