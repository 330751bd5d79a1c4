import type { Command } from 'commander'
import type { Sql } from 'postgres'
import { ConfigError, errorMessage } from '../errors.js'
import { type OutboxTable, outboxTable } from '../outbox/outbox-table.js'
import { resolveOptions } from '../poller/poller-options.js'
import { ExitCode } from '../supervisor/exit-codes.js'
import { outboxDiscoverSchemas } from '../tenants/discover-tenants.js'
import { componentOptionsFrom, optionNamer } from './options.js'
import { withDatabase } from './with-database.js'

/** Whether the command was given schema patterns (--schemas or OUTBOX_POLLER_SCHEMAS). */
export function schemasGiven(command: Command): boolean {
  return resolveOptions(componentOptionsFrom(command).poller, optionNamer(command)).schemas !== undefined
}

/**
 * A one-shot command on one outbox, or with `--schemas` on the outbox of every matching schema, one after
 * the other on one connection. A schema that fails is named on stderr and the others go on (unless
 * `failFast`); the exit code is the worst of them. `allSchemas`: also the matching schemas without an
 * outbox yet (migrate makes one); otherwise they are skipped, said on stderr.
 */
export async function withSchemas(command: Command, role: string, work: (sql: Sql, outbox: OutboxTable) => Promise<number>, options: { allSchemas?: boolean; failFast?: boolean } = {}): Promise<number> {
  const { schemas, table } = resolveOptions(componentOptionsFrom(command).poller, optionNamer(command))
  if (schemas === undefined) return withDatabase(command, role, work)
  return withDatabase(command, role, async (sql) => {
    const found = await outboxDiscoverSchemas(sql, schemas, table)
    if (found.length === 0) throw new ConfigError(`no schema matches ${schemas.join(' ')}`)
    let code: number = ExitCode.ok
    for (const { schema, hasOutbox } of found) {
      if (!hasOutbox && !options.allSchemas) {
        console.error(`outbox-poller: ${schema}: no outbox table ${table}, skipped`)
        continue
      }
      try {
        code = Math.max(code, await work(sql, outboxTable(schema, table)))
      } catch (error) {
        console.error(`outbox-poller: ${schema}: ${errorMessage(error)}`)
        code = Math.max(code, error instanceof ConfigError ? ExitCode.usage : ExitCode.failure)
        if (options.failFast) break
      }
    }
    return code
  })
}
