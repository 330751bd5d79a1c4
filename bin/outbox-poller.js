#!/usr/bin/env node
import { main } from '../dist/cli/main.js'

process.exitCode = await main(process.argv)
// A supervised worker's IPC channel would keep it alive after its work is done.
if (process.connected) process.disconnect()
