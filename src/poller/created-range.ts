/**
 * Bounds on `created_at` for statements that find a batch's rows by id: on a partitioned outbox the executor prunes
 * every partition no row of the batch is in (at executor startup too, for a prepared statement's generic plan), where
 * `id = any(…)` alone probes each partition's primary key; on a plain outbox it is a filter on rows already found.
 */

/**
 * The batch's created_at bounds, widened by a millisecond each way: a Date holds milliseconds, the column
 * microseconds, so the values as read are within a millisecond of the stored ones.
 */
export function createdRange(events: ReadonlyArray<{ created_at: Date }>): [Date, Date] {
  let low = Number.POSITIVE_INFINITY
  let high = Number.NEGATIVE_INFINITY
  for (const { created_at } of events) {
    const ms = created_at.getTime()
    if (ms < low) low = ms
    if (ms > high) high = ms
  }
  return [new Date(low - 1), new Date(high + 1)]
}

/** SQL: `created_at` (of `alias`, '' for none) within the bounds in parameters `$from` and `$from + 1`, as createdRange gives them. */
export function createdWithin(from: number, alias = ''): string {
  const column = alias === '' ? 'created_at' : `${alias}.created_at`
  return `${column} >= $${from}::timestamptz and ${column} < $${from + 1}::timestamptz`
}
