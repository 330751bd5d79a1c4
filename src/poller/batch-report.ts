import type { BatchOutcome } from './dispatch-batch.js'

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

export function batchReport(claimed: number, bytes: number, durationMs: number, outcome: BatchOutcome, dead: readonly string[], processedUnmatched: boolean): BatchReport {
  const types: Record<string, TypeReport> = {}
  const of = (type: string) => (types[type] ??= { handled: 0, failed: 0, dead: 0, handlerMs: [] })
  for (const event of outcome.succeeded) of(event.event_type).handled++
  if (processedUnmatched) for (const event of outcome.unmatched) of(event.event_type).handled++
  const deadIds = new Set(dead)
  for (const { event } of outcome.failed) {
    of(event.event_type).failed++
    if (deadIds.has(event.id)) of(event.event_type).dead++
  }
  for (const [type, durations] of outcome.handlerMs) of(type).handlerMs = durations
  return { claimed, bytes, committed: true, durationMs, latencyMs: outcome.latencyMs, types }
}
