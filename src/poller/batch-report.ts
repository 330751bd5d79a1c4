import type { BatchOutcome } from './dispatch-batch.js'
import type { BatchVerdicts } from './verdict.js'

/** Per event type: what a batch did with its events. */
export interface TypeReport {
  handled: number
  failed: number
  dead: number
  /** Handler durations (ms). */
  handlerMs: number[]
}

/**
 * What one batch did: plain data, so a supervised worker can send it over IPC to the process that serves
 * the metrics (the supervisor), and metrics survive worker restarts.
 */
export interface BatchReport {
  /** The outbox's schema, when the poller serves several (`schemas`). */
  schema?: string
  /** 1: the second of two overlapping batches (see PollerOptions.overlap); absent for the first or only one. */
  lane?: 1
  claimed: number
  /** Stored bytes of the claimed events' payloads and metadata (what `batchMaxBytes` bounds). */
  bytes: number
  /** The batch's settlement committed (an empty claim commits too); false when it rolled back. */
  committed: boolean
  durationMs: number
  /** Commit-to-handler latency of each handled event (ms). */
  latencyMs: number[]
  types: Record<string, TypeReport>
}

/** An empty claim (committed), or a batch that rolled back (`claimed` > 0, nothing settled). */
export function emptyBatchReport(durationMs: number, claimed = 0, bytes = 0, committed = claimed === 0): BatchReport {
  return { claimed, bytes, committed, durationMs, latencyMs: [], types: {} }
}

/** A settled batch's report, from its verdicts and the ids the settlement dead-lettered. */
export function batchReport(claimed: number, bytes: number, durationMs: number, verdicts: BatchVerdicts, dead: ReadonlySet<string>, timings: Pick<BatchOutcome, 'latencyMs' | 'handlerMs'>): BatchReport {
  const types: Record<string, TypeReport> = {}
  const of = (type: string) => (types[type] ??= { handled: 0, failed: 0, dead: 0, handlerMs: [] })
  for (const event of verdicts.processed) of(event.event_type).handled++
  for (const { event } of verdicts.failed) {
    const type = of(event.event_type)
    type.failed++
    if (dead.has(event.id)) type.dead++
  }
  for (const [type, durations] of timings.handlerMs) of(type).handlerMs = durations
  return { claimed, bytes, committed: true, durationMs, latencyMs: timings.latencyMs, types }
}
