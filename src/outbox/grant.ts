import type { Sql } from 'postgres'
import { ConfigError } from '../errors.js'
import { type OutboxTable, outboxTable, quoteIdent, quoteLiteral } from './outbox-table.js'

export interface GrantOptions {
  /** The role the pollers log in as. */
  role: string
  /** Also allow `cleanup` (DELETE of old processed and dead events). */
  cleanup?: boolean
}

/** Where a grant is recorded in the outbox's settings: `grant:<role>`, valued `poll` or `poll, cleanup`. */
export const grantSettingPrefix = 'grant:'

/**
 * Grants a poller role exactly what polling needs: the outbox's schema, SELECT and UPDATE on the outbox
 * and its wake-up flag, and reading (or, first, recording) the outbox's ordering mode. Nothing on the entity tables (capture runs as the outbox's owner), no DDL.
 * On a partitioned outbox its partitions get the same grants on the outbox's (a claim reads one partition
 * directly while a backlog lasts there, claim-partition.ts), and so does every partition upkeep creates later;
 * creating or dropping them is the owner's (migrate, cleanup run as the owner).
 * The grant is recorded in the outbox's settings, so `migrate --schemas` gives a tenant schema created later
 * the grants of the other matching schemas (see outboxRecordedGrants). Returns the statements it ran.
 */
export async function grantPollerRole(sql: Sql, outbox: OutboxTable, options: GrantOptions): Promise<string[]> {
  const [exists] = await sql`select 1 from pg_roles where rolname = ${options.role}`
  if (!exists) throw new ConfigError(`role ${options.role} does not exist: create it first (CREATE ROLE ${quoteIdent(options.role)} LOGIN PASSWORD '…')`)
  const role = quoteIdent(options.role)
  const statements = [
    `GRANT USAGE ON SCHEMA ${quoteIdent(outbox.schema)} TO ${role}`,
    `GRANT SELECT, UPDATE${options.cleanup ? ', DELETE' : ''} ON ${outbox.qualified} TO ${role}`,
    ...(await partitionsOf(sql, outbox)).map((partition) => `GRANT SELECT, UPDATE${options.cleanup ? ', DELETE' : ''} ON ${partition} TO ${role}`),
    `GRANT SELECT, UPDATE ON ${outbox.wakeup} TO ${role}`,
    `GRANT SELECT, INSERT ON ${outbox.settings} TO ${role}`,
  ]
  await sql.begin(async (tx) => {
    for (const statement of statements) await tx.unsafe(statement)
    await tx.unsafe(`insert into ${outbox.settings} (name, value) values ($1, $2) on conflict (name) do update set value = excluded.value, set_at = now()`, [
      grantSettingPrefix + options.role,
      options.cleanup ? 'poll, cleanup' : 'poll',
    ])
  })
  return statements
}

/** The outbox's partitions (none for a plain one), quoted and qualified. */
async function partitionsOf(sql: Sql, outbox: OutboxTable): Promise<string[]> {
  const rows = await sql.unsafe<Array<{ schema: string; table: string }>>(
    `select n.nspname as schema, c.relname as table from pg_inherits as i join pg_class as c on c.oid = i.inhrelid join pg_namespace as n on n.oid = c.relnamespace
      where i.inhparent = ${quoteLiteral(outbox.qualified)}::regclass order by c.relname`,
  )
  return rows.map((row) => `${quoteIdent(row.schema)}.${quoteIdent(row.table)}`)
}

/** A grant recorded in a tenant's outbox settings. */
export interface RecordedGrant {
  schema: string
  role: string
  cleanup: boolean
}

/** Outboxes per statement. */
const chunk = 200

/**
 * `outboxRecordedGrants`: the grants recorded in the settings of these schemas' outboxes, a few statements for
 * any number of them. The pollers' role may write the settings (it records the ordering mode): a record counts
 * only where its role does hold the grant (or no longer exists, which the caller says), so a poller cannot
 * grant another role anything.
 */
export async function outboxRecordedGrants(sql: Sql, schemas: readonly string[], table: string): Promise<RecordedGrant[]> {
  const grants: RecordedGrant[] = []
  for (let from = 0; from < schemas.length; from += chunk) {
    const parts = schemas.slice(from, from + chunk).map((schema) => {
      const outbox = outboxTable(schema, table)
      return `select ${quoteLiteral(schema)}::text as schema, g.role, s.value
        from ${outbox.settings} as s cross join lateral (select substr(s.name, ${grantSettingPrefix.length + 1}) as role) as g
        left join pg_catalog.pg_roles as r on r.rolname = g.role
       where starts_with(s.name, ${quoteLiteral(grantSettingPrefix)})
         and case when r.oid is null then true else pg_catalog.has_table_privilege(r.oid, ${quoteLiteral(outbox.qualified)}, 'UPDATE') end`
    })
    const rows = await sql.unsafe<Array<{ schema: string; role: string; value: string }>>(parts.join('\nunion all\n'))
    for (const row of rows) grants.push({ schema: row.schema, role: row.role, cleanup: row.value.includes('cleanup') })
  }
  return grants
}
