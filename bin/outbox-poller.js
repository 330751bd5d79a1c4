#!/usr/bin/env node
import { main } from '../dist/cli/main.js'

// A reader that stops reading (`outbox-poller --help | head -1`) ends the command quietly, not with an EPIPE
// stack; a closed stderr is ignored, so the exit code still tells how the command ended.
process.stdout.on('error', (error) => {
  if (error.code !== 'EPIPE') throw error
  process.exit(0)
})
process.stderr.on('error', (error) => {
  if (error.code !== 'EPIPE') throw error
})

process.exitCode = await main(process.argv)
// A supervised worker's IPC channel would keep it alive after its work is done.
if (process.connected) process.disconnect()
