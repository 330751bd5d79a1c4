import { AnnounceWindow, type AnnounceHook } from '../poller/announce-window.js'
import type { BatchReport } from '../poller/batch-report.js'
import { claimQueries } from '../poller/claim.js'
import { BatchDispatch } from '../poller/dispatch-batch.js'
import type { HandlerRegistry } from '../poller/handler-registry.js'
import { PausedTypes } from '../poller/paused-types.js'
import type { ResolvedOptions } from '../poller/poller-options.js'
import { BatchRunner } from '../poller/run-batch.js'
import { type PollerStats, settleQueries } from '../poller/settle.js'
import { WakeUp } from '../poller/wake-up.js'
import { type OutboxTable, outboxTable } from '../outbox/outbox-table.js'
import type { Logger } from '../types.js'
import { tenantEventId } from './tenant-event-id.js'

/** What every tenant's outbox shares: the poller's options, handlers, counters and hooks. */
export interface TenantShared {
  options: ResolvedOptions
  registry: HandlerRegistry
  stats: PollerStats
  log: Logger
  beforeDispatch: AnnounceHook | undefined
  afterBatch: ((report: BatchReport) => void) | undefined
}

/**
 * One tenant's outbox as a multi-tenant poller serves it: the same batch machinery as a single-outbox
 * poller (claim, dispatch, settle, retries, dead letters, suspects, pauses), built for its schema, plus
 * where it stands in the wake-up protocol. Its log lines and its handlers' `ctx.log` carry its schema.
 */
export class TenantOutbox {
  readonly schema: string
  readonly outbox: OutboxTable
  readonly runner: BatchRunner
  readonly dispatch: BatchDispatch
  readonly paused: PausedTypes
  /** Only raise() and lower() are used: the LISTEN connection is the poller's (tenant-listener.ts). */
  readonly wakeUp: WakeUp
  readonly log: Logger
  /** Settled batches in a row that deferred events (see BatchRunner.run). */
  deferrals = 0
  /** Empty polls in a row (the backoff when not listening); failed batches in a row. */
  idleSteps = 0
  errorSteps = 0
  /** Let go (its schema was dropped, or no longer matches): a batch still running is its last. */
  gone = false

  constructor(schema: string, shared: TenantShared) {
    const { options } = shared
    this.schema = schema
    this.outbox = outboxTable(schema, options.table)
    this.log = shared.log.child({ schema })
    this.wakeUp = new WakeUp(this.outbox)
    this.paused = new PausedTypes(this.outbox, options.intervalMaxMs)
    this.dispatch = new BatchDispatch(shared.registry, { concurrency: options.concurrency, handlerTimeoutMs: options.handlerTimeoutMs, log: this.log })
    const announce = shared.beforeDispatch
    const afterBatch = shared.afterBatch
    this.runner = new BatchRunner({
      outbox: this.outbox,
      claimQueries: claimQueries(this.outbox, { ordering: options.ordering, onDead: options.orderingOnDead }, options),
      settleQueries: settleQueries(this.outbox),
      policy: { unmatched: options.unmatched, holdMs: options.intervalMaxMs, retryDelayMs: options.retryDelayMs, retryDelayMaxMs: options.retryDelayMaxMs },
      batchSize: options.batchSize,
      batchMaxBytes: options.batchMaxBytes,
      maxAttempts: options.maxAttempts,
      dispatch: this.dispatch,
      // the ids name their schema: a supervisor charges a crash to this tenant's rows
      announcer: announce && new AnnounceWindow((ids, finished) => announce(ids.map((id) => tenantEventId(schema, id)), finished.map((id) => tenantEventId(schema, id))), options.concurrency),
      afterBatch: afterBatch && ((report) => afterBatch({ ...report, schema })),
      paused: this.paused,
      stats: shared.stats,
      log: this.log,
    })
  }
}
