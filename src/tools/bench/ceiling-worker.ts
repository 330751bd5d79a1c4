/**
 * A bench process measuring a broker's ceiling (`brokerCeiling`), apart from the bench's own process as the
 * poller is. Started by `outbox-poller bench` with its task as JSON in argv[2]; replies over IPC and exits.
 */
import { errorMessage } from '../../errors.js'
import { ExitCode } from '../../supervisor/exit-codes.js'
import { brokerCeiling } from './broker-ceiling.js'
import type { SinkSpec } from '../../sinks/parse-sink.js'

export interface CeilingTask {
  spec: SinkSpec
  count: number
}

const task = JSON.parse(process.argv[2]!) as CeilingTask
// a broker that refuses (no such exchange, bad credentials) is one line above the bench's own, no stack trace
const perSecond = await brokerCeiling(task.spec, task.count).catch((error: unknown) => {
  console.error(`outbox-poller: broker ceiling: ${errorMessage(error)}`)
  process.exit(ExitCode.failure)
})
process.send!({ type: 'ceiling', perSecond }, () => process.disconnect!())
