export { createPoller } from './create-poller.js'
export type { Poller, PollerStats } from './poller/poller.js'
import type { MigrateOptions, MigrateResult, TruncateUpgrade } from './outbox/migrate.js'
export type { MigrateOptions, MigrateResult, TruncateUpgrade }
export { captureTable, uncaptureTable, listCaptures, type CaptureEvent, type CaptureOptions, type CapturedTable } from './capture/capture.js'
export { lostCaptures, type LostCapture, type LostCaptureProblem } from './capture/capture-registry.js'
export { emit, withEventContext, type EventContextValues, type ExplicitEvent } from './capture/emit.js'
export { grantPollerRole, type GrantOptions } from './outbox/grant.js'
export { outboxTable, type OutboxTable } from './outbox/outbox-table.js'
export { defaults, resolveOptions, type Ordering, type OrderingOnDead, type PollerOptions, type ResolvedOptions, type UnmatchedPolicy } from './poller/poller-options.js'
export type { TxMode } from './poller/dispatch-batch.js'
export { parseDuration } from './duration.js'
export { parseByteSize } from './byte-size.js'
export type { BatchReport, TypeReport } from './poller/batch-report.js'
export { ConfigError, ConnectionError, RetryLaterError } from './errors.js'
export type { Handler, HandlerContext, HandlerMap, Logger, OutboxEvent } from './types.js'
export { outboxStatus } from './ops/monitor.js'
export { outboxDeadEvents, outboxDeleteDead } from './ops/dead.js'
export { outboxPause, outboxResume, outboxPausedTypes } from './ops/pause.js'
export { outboxReplay, outboxReplayCount } from './ops/replay.js'
export { outboxCleanup } from './ops/cleanup.js'
export { outboxDropDonePartitions, type DroppedPartitions, type PartitionRetention } from './ops/partition-retention.js'
export { outboxPartitionUpkeep, type UpkeepResult } from './outbox/partition-upkeep.js'
export { outboxPartitionBy, type PartitionBy } from './outbox/partition-layout.js'

/** Creates or upgrades the outbox. Its migrator (kysely) loads on the first call, not with the package. */
export async function migrate(options: MigrateOptions): Promise<MigrateResult> {
  return (await import('./outbox/migrate.js')).migrate(options)
}
export { backfill, type BackfillOptions, type BackfillResult } from './backfill/backfill.js'
export { outboxBackfills, type BackfillProgress, type BackfillState } from './backfill/backfill-progress.js'
