import { exponentialDelayMs, jitteredDelayMs } from './backoff.js'
import type { BatchOutcome } from './dispatch-batch.js'
import type { OutboxEvent } from '../types.js'

/** How events are settled: the options the verdicts depend on. */
export interface VerdictPolicy {
  /** `process`: an event no handler matches counts as processed; `hold`: it steps aside for `holdMs`. */
  unmatched: 'process' | 'hold'
  /** How long a held event steps aside (`--interval-max`). */
  holdMs: number
  retryDelayMs: number
  retryDelayMaxMs: number
}

/** A failed event: its error as stored in last_error and how long until its next attempt. */
export interface FailedVerdict {
  event: OutboxEvent
  error: string
  delayMs: number
}

/**
 * One verdict per event of a batch, grouped by verdict (one array each, so settling costs one statement
 * per verdict and nothing per event beyond the push). A failed event is dead-lettered instead when this was
 * its last attempt: the settle SQL decides that from the row's attempts.
 */
export interface BatchVerdicts {
  /** Every matching handler succeeded, or none matched under `--unmatched process`. */
  processed: OutboxEvent[]
  /** A handler threw, rejected or timed out. */
  failed: FailedVerdict[]
  /** No handler matched under `--unmatched hold`: no attempt charged, due again after `holdMs`. */
  held: OutboxEvent[]
  holdMs: number
  /** A handler threw RetryLaterError (a broker is down): no attempt charged, due again after `deferMs`. */
  deferred: OutboxEvent[]
  /** The outage backoff: 1 s, doubling per batch in a row with deferred events, up to 30 s. */
  deferMs: number
}

const outageBaseMs = 1_000
const outageMaxMs = 30_000

/**
 * The verdicts on a dispatched batch. `deferrals` counts the settled batches in a row before this one that
 * deferred events; `random` is the retry jitter's seam.
 */
export function batchVerdicts(outcome: BatchOutcome, policy: VerdictPolicy, deferrals: number, random: () => number = Math.random): BatchVerdicts {
  const hold = policy.unmatched === 'hold'
  const processed = hold || outcome.unmatched.length === 0 ? outcome.succeeded : outcome.succeeded.concat(outcome.unmatched)
  const failed: FailedVerdict[] = []
  for (const { event, error } of outcome.failed) {
    failed.push({ event, error: lastErrorText(error), delayMs: jitteredDelayMs(event.attempt, policy.retryDelayMs, policy.retryDelayMaxMs, random) })
  }
  return {
    processed,
    failed,
    held: hold ? outcome.unmatched : [],
    holdMs: policy.holdMs,
    deferred: outcome.deferred,
    deferMs: outcome.deferred.length === 0 ? 0 : exponentialDelayMs(deferrals + 1, outageBaseMs, outageMaxMs),
  }
}

/** How many events the verdicts cover. */
export function verdictCount(verdicts: BatchVerdicts): number {
  return verdicts.processed.length + verdicts.failed.length + verdicts.held.length + verdicts.deferred.length
}

const lastErrorMaxLength = 2000

/**
 * An error as stored in `last_error`: `Name: message` (the bare message for a plain Error), NUL written as
 * `\0` (a text column cannot hold NUL, and one would fail the whole settlement), cut at 2000 characters.
 */
export function lastErrorText(error: unknown): string {
  const text = (error instanceof Error ? (error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message) : String(error)).replaceAll('\0', '\\0')
  return text.length > lastErrorMaxLength ? `${text.slice(0, lastErrorMaxLength)}…` : text
}
