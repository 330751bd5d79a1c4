import type { Sql } from 'postgres'
import { ConfigError } from '../errors.js'
import { type OutboxTable, quoteIdent } from './outbox-table.js'

export interface GrantOptions {
  /** The role the pollers log in as. */
  role: string
  /** Also allow `cleanup` (DELETE of old processed and dead events). */
  cleanup?: boolean
}

/**
 * Grants a poller role exactly what polling needs: the outbox's schema, SELECT and UPDATE on the outbox
 * and its wake-up flag, and reading (or, first, recording) the outbox's ordering mode. Nothing on the entity tables (capture runs as the outbox's owner), no DDL.
 * On a partitioned outbox the same grants do: its partitions are reached through it and need none of their own,
 * and creating or dropping them is the owner's (migrate, cleanup run as the owner).
 * Returns the statements it ran.
 */
export async function grantPollerRole(sql: Sql, outbox: OutboxTable, options: GrantOptions): Promise<string[]> {
  const [exists] = await sql`select 1 from pg_roles where rolname = ${options.role}`
  if (!exists) throw new ConfigError(`role ${options.role} does not exist: create it first (CREATE ROLE ${quoteIdent(options.role)} LOGIN PASSWORD '…')`)
  const role = quoteIdent(options.role)
  const statements = [
    `GRANT USAGE ON SCHEMA ${quoteIdent(outbox.schema)} TO ${role}`,
    `GRANT SELECT, UPDATE${options.cleanup ? ', DELETE' : ''} ON ${outbox.qualified} TO ${role}`,
    `GRANT SELECT, UPDATE ON ${outbox.wakeup} TO ${role}`,
    `GRANT SELECT, INSERT ON ${outbox.settings} TO ${role}`,
  ]
  await sql.begin(async (tx) => {
    for (const statement of statements) await tx.unsafe(statement)
  })
  return statements
}
