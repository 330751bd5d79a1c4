import type { Command } from 'commander'
import type { Sql } from 'postgres'
import { resolveOptions } from '../poller/poller-options.js'
import { applicationName, connect, describeTarget, waitForDatabase } from '../database/connect.js'
import { errorMessage } from '../errors.js'
import { type OutboxTable, outboxTable } from '../outbox/outbox-table.js'
import { componentOptionsFrom, databaseUrlFrom, optionNamer } from './options.js'

/**
 * Opens a short-lived connection for a one-shot command (`migrate`, `status`, `cleanup`, …), named
 * `outbox-poller/<host>/<pid>/<role>` in pg_stat_activity, runs `work`, and closes it whatever happens.
 * Reads only the flags the command has (connection, schema, table), so no poller setting can break it.
 * While the database cannot be reached yet, says so once on stderr.
 */
export async function withDatabase<T>(command: Command, role: string, work: (sql: Sql, outbox: OutboxTable) => Promise<T>): Promise<T> {
  const options = resolveOptions(componentOptionsFrom(command).poller, optionNamer(command))
  const url = databaseUrlFrom(command)
  const sql = connect(url, { max: 1, applicationName: applicationName(role) })
  try {
    const target = describeTarget(url)
    let told = false
    await waitForDatabase(sql, target, options.connectTimeoutMs, (error) => {
      if (!told) console.error(`outbox-poller: cannot connect to ${target} yet (${errorMessage(error)}): retrying for up to ${Math.round(options.connectTimeoutMs / 1000)} s`)
      told = true
    })
    return await work(sql, outboxTable(options.schema, options.table))
  } finally {
    await sql.end({ timeout: 5 })
  }
}
