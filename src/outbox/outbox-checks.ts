import type { Sql } from 'postgres'
import { ConfigError } from '../errors.js'
import type { OutboxTable } from './outbox-table.js'
import { outboxCheckOrderingIndex } from './ordering-index.js'

/**
 * A missing outbox is a user mistake (wrong --schema or --table, or no migration yet), not a crash. With
 * `current`, an outbox that lacks the latest migrations is one too: the check looks for the newest
 * migration's objects (the settings of 0003, the registry of captured tables of 0004, the group column of 0008).
 */
export async function outboxCheckExists(sql: Sql, outbox: OutboxTable, options: { current?: boolean } = {}): Promise<void> {
  const [row] = await sql<{ exists: boolean; current: boolean }[]>`select to_regclass(${outbox.qualified}) is not null as exists, to_regclass(${outbox.settings}) is not null and to_regclass(${outbox.captured}) is not null
      and exists (select 1 from pg_attribute where attrelid = to_regclass(${outbox.qualified}) and attname = 'group_key' and not attisdropped) as current`
  if (!row!.exists) throw new ConfigError(`outbox table ${outbox.qualified} does not exist: run \`outbox-poller migrate\` first`)
  if (options.current && !row!.current) throw new ConfigError(`outbox table ${outbox.qualified} needs newer migrations: run \`outbox-poller migrate\` first`)
}

/** A poller's ordering, as the outbox records it. */
export interface OutboxOrdering {
  ordering: 'none' | 'entity' | 'group'
  onDead: 'continue' | 'block'
}

/** The ordering as the outbox's settings record it (`none`, `entity, on dead: continue`, `group, on dead: block`). */
export function orderingSetting(order: OutboxOrdering): string {
  return order.ordering === 'none' ? 'none' : `${order.ordering}, on dead: ${order.onDead}`
}

/**
 * The ordering mode is the outbox's: the first replica records it, and one started with another refuses. An ordering
 * that claims heads needs its indexes first (OrderingIndexMissing; `target` as outboxCheckOrderingIndex takes it).
 */
export async function outboxCheckOrdering(sql: Sql, outbox: OutboxTable, order: OutboxOrdering, target?: string): Promise<void> {
  if (order.ordering !== 'none') await outboxCheckOrderingIndex(sql, outbox, order.ordering, target)
  const mine = orderingSetting(order)
  let [stored] = await sql.unsafe(
    `with recorded as (insert into ${outbox.settings} (name, value) values ('ordering', $1) on conflict (name) do nothing returning value, set_at)
     select value, set_at from recorded union all select value, set_at from ${outbox.settings} where name = 'ordering'`,
    [mine],
  )
  // A replica starting at the same moment recorded it first: the insert waited for its commit, but the
  // statement's snapshot predates that commit. A new statement sees it.
  stored ??= (await sql.unsafe(`select value, set_at from ${outbox.settings} where name = 'ordering'`))[0]
  if (stored!.value !== mine) {
    throw new ConfigError(
      `this outbox runs with ordering "${stored!.value}" (recorded ${(stored!.set_at as Date).toISOString()}), but this replica was started with "${mine}": ` +
        `start every replica with the same --ordering and --ordering-on-dead, or, with every replica stopped, DELETE FROM ${outbox.settings} WHERE name = 'ordering'`,
    )
  }
}

/** Whether the current role owns the outbox (or is a member of its owner): partition DDL, VACUUM and REINDEX need it. */
export async function outboxOwned(sql: Sql, outbox: OutboxTable): Promise<boolean> {
  const [owner] = await sql<Array<{ owns: boolean }>>`select pg_has_role(current_user, relowner, 'MEMBER') as owns from pg_class where oid = ${outbox.qualified}::regclass`
  return owner?.owns === true
}
