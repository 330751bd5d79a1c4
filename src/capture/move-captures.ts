import type { Sql } from 'postgres'
import { ConfigError } from '../errors.js'
import { outboxCheckExists } from '../outbox/outbox-checks.js'
import type { OutboxTable } from '../outbox/outbox-table.js'
import { type CapturedTable, captureTriggerNames, listCaptures, uncaptureTable } from './capture.js'

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
  await outboxCheckExists(sql, to, { current: true }) // its capture_attach is 0008's
  return (await sql.begin(async (tx) => {
    const moved: CapturedTable[] = []
    // a transaction is a Sql for these: every statement runs in it
    const inTx = tx as unknown as Sql
    for (const c of await listCaptures(inTx, from)) {
      await copyTriggers(inTx, from, to, c)
      await uncaptureTable(inTx, from, c.table)
      moved.push((await listCaptures(inTx, to)).find((captured) => captured.table === c.table)!)
    }
    return moved
  })) as CapturedTable[]
}

/**
 * Attaches to `to` the capture a table has into `from`, from its trigger's own arguments (column numbers and the
 * excluded columns' names), not from the options as listed: an excluded column dropped before the move must stay
 * excluded by its name, and a captured column dropped stays uncaptured if re-added, as they would without the move.
 */
async function copyTriggers(sql: Sql, from: OutboxTable, to: OutboxTable, captured: CapturedTable): Promise<void> {
  const [trigger] = await sql<Array<{ args: Buffer }>>`
    select t.tgargs as args from pg_trigger t
     where t.tgrelid = ${captured.table}::regclass and t.tgparentid = 0 and t.tgname = any (${captureTriggerNames(from)}::text[])
       and t.tgfoid in (${from.captureFunction}::regproc, ${from.captureRowsFunction}::regproc)
     limit 1`
  // the layout of 0008_group_key's capture_attach; argument 9 (the group) is absent from triggers attached before it
  const [entity, , key, keyName, ignored, columns, excluded, excludedNames, softDelete, group = ''] = trigger!.args.toString('utf8').split('\0')
  const rowEvents = captured.events.filter((event) => event !== 'truncate')
  await sql`select ${sql.unsafe(to.captureAttachFunction)}(${captured.table}::regclass, ${entity!}, ${key!}::int2, ${keyName!}, ${ignored!}::int2[],
    nullif(${columns!}, '')::int2[], ${excluded!}::int2[], ${excludedNames!}::text[], nullif(${softDelete!}, '')::int2, ${rowEvents}::text[], ${captured.mode}, nullif(${group}, '')::int2)`
  await sql`select ${sql.unsafe(to.captureTruncateAttachFunction)}(${captured.table}::regclass, ${entity!}, ${captured.events.includes('truncate')})`
}
