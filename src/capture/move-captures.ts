import type { Sql } from 'postgres'
import { ConfigError } from '../errors.js'
import { outboxCheckExists } from '../outbox/outbox-checks.js'
import type { OutboxTable } from '../outbox/outbox-table.js'
import { type CapturedTable, captureTable, listCaptures, uncaptureTable } from './capture.js'

/**
 * Moves every table captured into `from` to `to` (another outbox, e.g. a partitioned one beside a plain one),
 * with the same options, in one transaction: a write to a captured table commits before it (its event in
 * `from`) or after it (in `to`), never in both or neither. The triggers' DDL locks each captured table against
 * writes until the commit, a moment. Returns the tables moved.
 */
export async function outboxMoveCaptures(sql: Sql, from: OutboxTable, to: OutboxTable): Promise<CapturedTable[]> {
  if (from.qualified === to.qualified) throw new ConfigError(`the captures are already in ${to.qualified}`)
  await outboxCheckExists(sql, from)
  const [exists] = await sql<Array<{ exists: boolean }>>`select to_regclass(${to.captured}) is not null as exists`
  if (!exists!.exists) throw new ConfigError(`${to.qualified} does not exist or is not migrated: run outbox-poller migrate --table ${to.table} first`)
  return (await sql.begin(async (tx) => {
    const moved: CapturedTable[] = []
    // a transaction is a Sql for these: every statement runs in it
    const inTx = tx as unknown as Sql
    for (const c of await listCaptures(inTx, from)) {
      moved.push(await captureTable(inTx, to, { table: c.table, entity: c.entity, key: c.key, ignoreColumns: c.ignoreColumns, columns: c.columns, excludeColumns: c.excludeColumns, softDeleteColumn: c.softDeleteColumn ?? undefined, events: c.events, mode: c.mode, groupBy: c.groupBy ?? undefined }))
      await uncaptureTable(inTx, from, c.table)
    }
    return moved
  })) as CapturedTable[]
}
