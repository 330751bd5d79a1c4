import type { OutboxTable } from '../outbox/outbox-table.js'
import type { PartitionBy } from '../outbox/partition-layout.js'
import type { UpkeepResult } from '../outbox/partition-upkeep.js'
import type { DroppedPartitions } from '../ops/partition-retention.js'

/** What partition upkeep did, one line, and a line per partition it could not create. */
export function printUpkeep(outbox: OutboxTable, partitions: { by: PartitionBy } & UpkeepResult): void {
  const created = partitions.created.length === 0 ? 'none missing' : `created ${partitions.created.join(', ')}`
  console.log(`${outbox.qualified} is partitioned by ${partitions.by}: ${created}`)
  for (const { name, reason } of partitions.skipped) console.log(`partition ${name} not created: ${reason}`)
}

/** What cleanup's partition drops did. */
export function printDrops(outbox: OutboxTable, drops: DroppedPartitions): void {
  for (const { name, rows, bytes } of drops.dropped) {
    const size = `${(bytes / 1048576).toFixed(1)} MB`
    console.log(`dropped partition ${name} of ${outbox.qualified} (${rows === null ? size : `about ${Math.round(rows).toLocaleString('en')} events, ${size}`})`)
  }
  for (const name of drops.busy) console.log(`partition ${name} not dropped: its lock was not granted in time (a long transaction on the outbox?): the next cleanup tries again`)
}
