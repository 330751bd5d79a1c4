import type { Command } from 'commander'
import type { Sql } from 'postgres'
import { ConfigError, errorMessage } from '../errors.js'
import { type OutboxTable, outboxTable } from '../outbox/outbox-table.js'
import { resolveOptions } from '../poller/poller-options.js'
import { ExitCode } from '../supervisor/exit-codes.js'
import { type DiscoveredSchema, outboxDiscoverSchemas } from '../tenants/discover-tenants.js'
import { componentOptionsFrom, optionNamer } from './options.js'
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
 * the other, each `schemasPerSession` of them in a `withDatabase` session of their own. A schema that fails is
 * named on stderr and the others go on (unless `failFast`); the exit code is the worst of them. `allSchemas`:
 * also the matching schemas without an outbox yet (migrate makes one); otherwise they are skipped, said on stderr.
 */
export async function withSchemas(command: Command, role: string, work: (sql: Sql, outbox: OutboxTable) => Promise<number>, options: { allSchemas?: boolean; failFast?: boolean } = {}): Promise<number> {
  const { schemas, table } = resolveOptions(componentOptionsFrom(command).poller, optionNamer(command))
  if (schemas === undefined) return withDatabase(command, role, work)
  const served = ({ hasOutbox }: DiscoveredSchema) => hasOutbox || options.allSchemas === true
  let found: DiscoveredSchema[] | undefined
  let code: number = ExitCode.ok
  let next = 0
  // a session for the next schemas served and the skipped ones among them: a new one only for a schema to serve
  do {
    next = await withDatabase(command, role, async (sql) => {
      found ??= await outboxDiscoverSchemas(sql, schemas, table)
      if (found.length === 0) throw new ConfigError(`no schema matches ${schemas.join(' ')}`)
      let i = next
      for (let inSession = 0; i < found.length; i++) {
        const { schema } = found[i]!
        if (!served(found[i]!)) {
          console.error(`outbox-poller: ${schema}: no outbox table ${table}, skipped`)
          continue
        }
        if (inSession++ === schemasPerSession) break
        try {
          code = Math.max(code, await work(sql, outboxTable(schema, table)))
        } catch (error) {
          console.error(`outbox-poller: ${schema}: ${errorMessage(error)}`)
          code = Math.max(code, error instanceof ConfigError ? ExitCode.usage : ExitCode.failure)
          if (options.failFast) return found.length
        }
      }
      return i
    })
  } while (next < found!.length)
  return code
}
