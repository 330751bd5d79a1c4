import type { Command } from 'commander'
import { type CapturedTable, type CaptureEvent, type CaptureModeOption, captureTable, listCaptures, uncaptureTable } from '../capture/capture.js'
import { type LostCapture, lostCaptures } from '../capture/capture-registry.js'
import { outboxCheckExists } from '../outbox/outbox-checks.js'
import { grantPollerRole, outboxRecordedGrants, type RecordedGrant } from '../outbox/grant.js'
import { migrate, type TruncateUpgrade } from '../outbox/migrate.js'
import { parsePartitionBy } from '../outbox/partition-layout.js'
import { printUpkeep } from './partition-report.js'
import { ConfigError } from '../errors.js'
import { ExitCode } from '../supervisor/exit-codes.js'
import type { Sql } from 'postgres'
import { resolveOptions } from '../poller/poller-options.js'
import { outboxDiscoverSchemas } from '../tenants/discover-tenants.js'
import { componentOptionsFrom, listFlag, optionNamer } from './options.js'
import { withDatabase } from './with-database.js'
import { schemasGiven, withSchemas } from './with-schemas.js'
import { type OutboxTable, outboxTable, quoteIdent } from '../outbox/outbox-table.js'
import { outboxMoveCaptures } from '../capture/move-captures.js'

export async function migrateCommand(command: Command): Promise<number> {
  const flags = command.opts<{ ordering?: string; failFast?: boolean; partitionBy?: string }>()
  if (flags.ordering !== undefined && flags.ordering !== 'entity' && flags.ordering !== 'group') throw new ConfigError(`--ordering must be entity or group (got ${JSON.stringify(flags.ordering)})`)
  const ordering = flags.ordering as 'entity' | 'group' | undefined
  const partitionBy = parsePartitionBy(flags.partitionBy)
  const tenants = schemasGiven(command)
  let grants: Promise<RecordedGrant[]> | undefined
  return withSchemas(command, 'migrate', async (sql, outbox) => {
    const migrated = await migrate({ sql, schema: outbox.schema, table: outbox.table, ordering, partitionBy })
    const { applied, orderingIndexes, truncateUpgrade, partitions } = migrated
    console.log(applied.length === 0 ? `${outbox.qualified} is up to date` : `applied to ${outbox.qualified}: ${applied.join(', ')}`)
    if (partitions !== undefined) printUpkeep(outbox, partitions)
    // an upgrade of an outbox with captured tables says what became of them; a new outbox has none
    if (truncateUpgrade !== undefined && truncateUpgrade.attached.length + truncateUpgrade.leftOut.length > 0) console.log(describeTruncateUpgrade(truncateUpgrade))
    if (orderingIndexes !== undefined) console.log(`${orderingIndexes.map(({ index, state }) => `${index} ${state}`).join(', ')}: pollers may run with --ordering ${migrated.ordering}`)
    if (tenants) await grantAsTheOthers(sql, outbox, await (grants ??= matchingGrants(sql, command, outbox.table)))
    return ExitCode.ok
  }, { allSchemas: true, failFast: flags.failFast })
}

/** The grants recorded in the matching schemas' outboxes, read once, when the first schema is migrated. */
async function matchingGrants(sql: Sql, command: Command, table: string): Promise<RecordedGrant[]> {
  const { schemas } = resolveOptions(componentOptionsFrom(command).poller, optionNamer(command))
  const found = await outboxDiscoverSchemas(sql, schemas!, table)
  return outboxRecordedGrants(sql, found.filter((schema) => schema.current).map((schema) => schema.schema), table)
}

/**
 * A tenant schema created after `grant --schemas` gets, when migrated, every grant recorded in the other
 * matching schemas that it lacks: no one has to remember to run grant again. A role since dropped is said, not an error.
 */
async function grantAsTheOthers(sql: Sql, outbox: OutboxTable, grants: readonly RecordedGrant[]): Promise<void> {
  const own = new Set(grants.filter((grant) => grant.schema === outbox.schema).map((grant) => grant.role))
  const wanted = new Map<string, boolean>()
  for (const grant of grants) if (!own.has(grant.role)) wanted.set(grant.role, (wanted.get(grant.role) ?? false) || grant.cleanup)
  for (const [role, cleanup] of wanted) {
    try {
      await grantPollerRole(sql, outbox, { role, cleanup })
      console.log(`granted ${role} on ${outbox.qualified}${cleanup ? ' (with cleanup)' : ''}, as in the other matching schemas`)
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error
      console.error(`outbox-poller: ${outbox.schema}: not granted to ${role}, granted in other matching schemas: ${error.message}`)
    }
  }
}

export async function captureCommand(table: string, command: Command): Promise<number> {
  const flags = command.opts<{ entity: string; key?: string; ignoreColumns?: string[]; columns?: string[]; excludeColumns?: string[]; softDeleteColumn?: string; events?: string[]; mode?: string; groupBy?: string }>()
  return withSchemas(command, 'capture', async (sql, outbox) => {
    const captured = await captureTable(sql, outbox, {
      table: tableIn(table, outbox, schemasGiven(command)),
      entity: flags.entity,
      key: flags.key,
      ignoreColumns: listFlag(flags.ignoreColumns),
      columns: listFlag(flags.columns),
      excludeColumns: listFlag(flags.excludeColumns),
      softDeleteColumn: flags.softDeleteColumn,
      events: listFlag(flags.events) as CaptureEvent[] | undefined,
      mode: flags.mode as CaptureModeOption | undefined,
      groupBy: flags.groupBy,
    })
    console.log(`capturing ${describeCapture(captured)} into ${outbox.qualified}`)
    return ExitCode.ok
  })
}

/** One line: which existing captures now capture TRUNCATE (their handlers on `<entity>.*` get `.truncated` events). */
function describeTruncateUpgrade({ attached, leftOut }: TruncateUpgrade): string {
  const now = attached.length === 0 ? 'no captured table captures TRUNCATE' : `TRUNCATE is now captured on ${attached.join(', ')} (handlers of <entity>.* get <entity>.truncated events)`
  const left = leftOut.length === 0 ? '' : `; ${leftOut.join(', ')} keep their --events subset (capture again with truncate among --events to add it)`
  return now + left
}

/**
 * With --schemas, an unqualified <table> is the one in each outbox's own schema (`capture orders --schemas
 * 'tenant_*'` attaches every tenant's orders); a qualified one, or a single outbox's, is as written.
 */
function tableIn(table: string, outbox: OutboxTable, perSchema: boolean): string {
  if (!perSchema) return table
  let quoted = false
  for (const char of table) {
    if (char === '"') quoted = !quoted
    else if (char === '.' && !quoted) return table
  }
  return `${quoteIdent(outbox.schema)}.${table}`
}

function describeCapture(c: CapturedTable): string {
  const types = c.events.map((event) => ({ insert: 'created', update: 'updated', delete: 'deleted', truncate: 'truncated' })[event])
  if (c.softDeleteColumn) types.push('deleted', 'restored')
  const details = [`key ${c.key}`]
  if (c.columns.length > 0) details.push(`columns ${c.columns.join(', ')}`)
  if (c.excludeColumns.length > 0) details.push(`excluding ${c.excludeColumns.join(', ')}`)
  if (c.ignoreColumns.length > 0) details.push(`ignoring ${c.ignoreColumns.join(', ')}`)
  if (c.softDeleteColumn) details.push(`soft delete ${c.softDeleteColumn}`)
  if (c.groupBy) details.push(`group by ${c.groupBy}`)
  return `${c.table} as ${c.entity}.${[...new Set(types)].join('|')} (${details.join('; ')}) by ${c.mode}`
}

/** A lost capture and the two ways to renew it: the command, and the SQL call for the migration that re-creates the table. */
function describeLostCapture(c: LostCapture): string {
  return [`${c.table} ${c.reason}`, `  capture it again: ${c.recapture.command}`, `  or, in the migration that re-creates it: ${c.recapture.sql};`].join('\n')
}

export async function moveCapturesCommand(command: Command): Promise<number> {
  const flags = command.opts<{ toTable: string }>()
  return withDatabase(command, 'capture', async (sql, outbox) => {
    const to = outboxTable(outbox.schema, flags.toTable)
    const moved = await outboxMoveCaptures(sql, outbox, to)
    for (const captured of moved) console.log(`capturing ${describeCapture(captured)} into ${to.qualified}`)
    console.log(`moved ${moved.length} captured table${moved.length === 1 ? '' : 's'} from ${outbox.qualified} to ${to.qualified}`)
    return ExitCode.ok
  })
}

export async function uncaptureCommand(table: string, command: Command): Promise<number> {
  return withDatabase(command, 'capture', async (sql, outbox) => {
    const removed = await uncaptureTable(sql, outbox, table)
    console.log(removed ? `no longer capturing ${table}` : `${table} was not captured into ${outbox.qualified}`)
    return ExitCode.ok
  })
}

export async function capturesCommand(command: Command): Promise<number> {
  const flags = command.opts<{ json?: boolean }>()
  return withDatabase(command, 'capture', async (sql, outbox) => {
    await outboxCheckExists(sql, outbox, { current: true }) // the registry of captured tables is 0004's
    const captures = await listCaptures(sql, outbox)
    const lost = await lostCaptures(sql, outbox)
    // a live capture with a problem (restored, key dropped) is one entry; a lost one is its own entry
    const entries: Array<CapturedTable | LostCapture> = captures.map((c) => lost.find((l) => l.table === c.table) ?? c)
    entries.push(...lost.filter((l) => !captures.some((c) => c.table === l.table)))
    if (flags.json) console.log(JSON.stringify(entries))
    else if (entries.length === 0) console.log(`no table is captured into ${outbox.qualified}`)
    else for (const c of entries) console.log('problem' in c ? describeLostCapture(c) : describeCapture(c))
    return ExitCode.ok
  })
}

export async function grantCommand(role: string, command: Command): Promise<number> {
  const flags = command.opts<{ cleanup?: boolean }>()
  return withSchemas(command, 'grant', async (sql, outbox) => {
    for (const statement of await grantPollerRole(sql, outbox, { role, cleanup: flags.cleanup })) console.log(`${statement};`)
    return ExitCode.ok
  })
}
