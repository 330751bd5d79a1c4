import type { Command } from 'commander'
import { checkDatabaseUrl } from '../database/database-url.js'

/**
 * The command's `--database-url` (or DATABASE_URL), checked, or undefined when neither is set. A mistake
 * is a ConfigError naming the one the user gave.
 */
export function checkedDatabaseUrl(command: Command): string | undefined {
  const url = command.opts<{ databaseUrl?: string }>().databaseUrl
  if (!url) return undefined
  checkDatabaseUrl(url, command.getOptionValueSource('databaseUrl') === 'env' ? 'DATABASE_URL' : '--database-url')
  return url
}
