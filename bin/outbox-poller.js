#!/usr/bin/env node
import { main } from '../dist/cli/main.js'

// A reader that stops reading (`outbox-poller --help | head -1`) ends the command quietly, not with an EPIPE
// stack: one that cleans up on Ctrl-C (demo, bench) is interrupted the same way, any other ends at once.
// A closed stderr is ignored, so the exit code still tells how the command ended.
let stdoutClosed = false
process.stdout.on('error', (error) => {
  if (error.code !== 'EPIPE') throw error
  if (stdoutClosed) return // the writes that were on their way: the first one decided
  stdoutClosed = true
  if (process.listenerCount('SIGINT') > 0) process.emit('SIGINT', 'SIGINT')
  else process.exit(0)
})
process.stderr.on('error', (error) => {
  if (error.code !== 'EPIPE') throw error
})

process.exitCode = await main(process.argv)
// A supervised worker's IPC channel would keep it alive after its work is done.
if (process.connected) process.disconnect()
