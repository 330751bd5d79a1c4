/**
 * The demo's handler module: records every event it handles as "<id> <latency ms>" in a file of its
 * process's own ($OUTBOX_DEMO_DIR/<pid>.log), so the demo can prove each event was handled exactly once.
 */
import { appendFileSync } from 'node:fs'
import { join } from 'node:path'
import type { OutboxEvent } from '../types.js'

const directory = process.env.OUTBOX_DEMO_DIR
if (!directory) throw new Error('OUTBOX_DEMO_DIR is not set: this module is the handler of `outbox-poller demo`')
const file = join(directory, `${process.pid}.log`)

export default function recordEvent(event: OutboxEvent): void {
  appendFileSync(file, `${event.id} ${Date.now() - event.created_at.getTime()}\n`)
}
