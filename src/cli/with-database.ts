import type { Command } from 'commander'
import type { Sql } from 'postgres'
import { resolveOptions } from '../config.js'
import { applicationName, connect, describeTarget, waitForDatabase } from '../db.js'
import { type OutboxTable, outboxTable } from '../outbox-table.js'
import { databaseUrlFrom, optionNamer, pollerOptionsFrom } from './options.js'

/**
 * Opens a short-lived connection for a one-shot command (`migrate`, `status`, `cleanup`, …), named
 * `outbox-poller/<host>/<pid>/<role>` in pg_stat_activity, runs `work`, and closes it whatever happens.
 * Reads only the flags the command has (connection, schema, table), so no poller setting can break it.
 */
export async function withDatabase<T>(command: Command, role: string, work: (sql: Sql, outbox: OutboxTable) => Promise<T>): Promise<T> {
  const options = resolveOptions(pollerOptionsFrom(command), optionNamer(command))
  const url = databaseUrlFrom(command)
  const sql = connect(url, { max: 1, applicationName: applicationName(role) })
  try {
    await waitForDatabase(sql, describeTarget(url), options.connectTimeoutMs)
    return await work(sql, outboxTable(options.schema, options.table))
  } finally {
    await sql.end({ timeout: 5 })
  }
}
