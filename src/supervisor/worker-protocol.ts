import type { BatchReport } from '../poller/batch-report.js'

/** Why a worker was replaced; every restart is logged and counted by reason. */
export type RestartReason = 'memory' | 'crash' | 'signal' | 'reload'

/** Worker → supervisor. */
export type WorkerMessage =
  /** Connected and polling. A worker that exits before this failed to start (it already retried). */
  | { type: 'ready' }
  /**
   * Sent (and flushed) before the handlers of `ids` start, possibly several times per batch: `finished`
   * lists the events of the batch whose handlers all ended since the previous message. If the worker dies,
   * the suspects are the events announced and not finished. `lane` 1: the second of two overlapping batches.
   */
  | { type: 'dispatching'; ids: string[]; finished: string[]; lane?: 1 }
  /** The batch committed or rolled back (`report.committed`; `report.lane` says which of two overlapping batches); what it did feeds the metrics. */
  | { type: 'settled'; report: BatchReport }
  /**
   * The loop is alive: sent at most once a second while claims come back empty, and after every claim that
   * failed (`claimFailed`: the database is unreachable, say; the loop backs off, which is no hang).
   */
  | { type: 'heartbeat'; claimFailed?: boolean }

/** Supervisor → worker. */
export type SupervisorMessage =
  /** Stop claiming, finish and commit the batch in hand, close the connections, exit 0. */
  | { type: 'drain'; reason: RestartReason }
  /** Abort the handlers and roll the batch back, then exit. */
  | { type: 'force' }

/** Set in a supervised worker's environment. */
export const workerEnvMarker = 'OUTBOX_POLLER_WORKER'
