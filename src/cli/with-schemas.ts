import type { Command } from 'commander'
import type { Sql } from 'postgres'
import { ConfigError, errorMessage } from '../errors.js'
import { applicationName, connect } from '../database/connect.js'
import { type OutboxTable, outboxTable } from '../outbox/outbox-table.js'
import { resolveOptions } from '../poller/poller-options.js'
import { ExitCode } from '../supervisor/exit-codes.js'
import { outboxDiscoverSchemas } from '../tenants/discover-tenants.js'
import { componentOptionsFrom, databaseUrlFrom, optionNamer } from './options.js'
import { withDatabase } from './with-database.js'

/** Whether the command was given schema patterns (--schemas or OUTBOX_POLLER_SCHEMAS). */
export function schemasGiven(command: Command): boolean {
  return resolveOptions(componentOptionsFrom(command).poller, optionNamer(command)).schemas !== undefined
}

/**
 * Schemas served by one server session before the next gets a new one. A session's catalog caches keep every
 * relation it has touched, and each DDL statement's invalidations cost it more for each: migrating and
 * capturing 300 tenants on one session took 3.6 × as long as on a new session every 10.
 */
const schemasPerSession = 10

/**
 * A one-shot command on one outbox, or with `--schemas` on the outbox of every matching schema, one after
 * the other, on a new connection every `schemasPerSession` schemas. A schema that fails is named on stderr and the others go on (unless
 * `failFast`); the exit code is the worst of them. `allSchemas`: also the matching schemas without an
 * outbox yet (migrate makes one); otherwise they are skipped, said on stderr.
 */
export async function withSchemas(command: Command, role: string, work: (sql: Sql, outbox: OutboxTable) => Promise<number>, options: { allSchemas?: boolean; failFast?: boolean } = {}): Promise<number> {
  const { schemas, table } = resolveOptions(componentOptionsFrom(command).poller, optionNamer(command))
  if (schemas === undefined) return withDatabase(command, role, work)
  return withDatabase(command, role, async (first) => {
    const found = await outboxDiscoverSchemas(first, schemas, table)
    if (found.length === 0) throw new ConfigError(`no schema matches ${schemas.join(' ')}`)
    let code: number = ExitCode.ok
    let sql = first
    let served = 0
    try {
      for (const { schema, hasOutbox } of found) {
        if (!hasOutbox && !options.allSchemas) {
          console.error(`outbox-poller: ${schema}: no outbox table ${table}, skipped`)
          continue
        }
        if (served > 0 && served % schemasPerSession === 0) {
          if (sql !== first) await sql.end({ timeout: 5 })
          sql = connect(databaseUrlFrom(command), { max: 1, applicationName: applicationName(role) })
        }
        served++
        try {
          code = Math.max(code, await work(sql, outboxTable(schema, table)))
        } catch (error) {
          console.error(`outbox-poller: ${schema}: ${errorMessage(error)}`)
          code = Math.max(code, error instanceof ConfigError ? ExitCode.usage : ExitCode.failure)
          if (options.failFast) break
        }
      }
    } finally {
      if (sql !== first) await sql.end({ timeout: 5 })
    }
    return code
  })
}
