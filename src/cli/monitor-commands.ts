import type { Command } from 'commander'
import type { Sql } from 'postgres'
import { outboxCleanup } from '../ops/cleanup.js'
import { bloatFactor, outboxMaintenance } from '../ops/maintenance.js'
import { durationOption, integerOption, resolveOptions } from '../poller/poller-options.js'
import { outboxTenantsStatus } from '../ops/tenant-status.js'
import { formatTenantsStatus, tenantsStatusViolations } from './tenant-status-report.js'
import { parseDuration } from '../duration.js'
import { ConfigError } from '../errors.js'
import { parseEventTypePattern } from '../poller/event-type-pattern.js'
import { outboxStatus } from '../ops/monitor.js'
import { outboxCheckExists, outboxOwned } from '../outbox/outbox-checks.js'
import type { OutboxTable } from '../outbox/outbox-table.js'
import { outboxPartitionBy, type PartitionBy } from '../outbox/partition-layout.js'
import { outboxPartitionUpkeep } from '../outbox/partition-upkeep.js'
import { outboxDropDonePartitions } from '../ops/partition-retention.js'
import { printDrops, printUpkeep } from './partition-report.js'
import { outboxReplay, outboxReplayCount, type ReplaySelection } from '../ops/replay.js'
import { ExitCode } from '../supervisor/exit-codes.js'
import { addSchemasFlag, componentOptionsFrom, databaseCommand, listFlag, optionNamer } from './options.js'
import { formatStatus, type StatusLimits, statusViolations } from './status-report.js'
import { withDatabase } from './with-database.js'
import { withSchemas } from './with-schemas.js'

/** main.ts's wrapper: runs a command function with its command and positional arguments, and records the exit code it returns. */
export type CommandAction = (fn: (command: Command, ...args: string[]) => Promise<number>) => (...args: unknown[]) => Promise<void>

/** A replay of more events than this needs --yes. */
export const replayConfirmLimit = 1000

const clearScreen = '\x1b[H\x1b[2J'

/** Adds `status`, `replay` and `cleanup` to the program. */
export function registerMonitorCommands(program: Command, action: CommandAction): void {
  addSchemasFlag(databaseCommand(program, 'status', 'show the backlog, dead events, throughput, lag, latency per event type, the connected replicas, and the layout (partitions)'))
    .option('--json', 'print JSON (with --watch: one line per refresh)')
    .option('--watch [seconds]', 'refresh in place every <seconds> until Ctrl-C (default: 2)')
    .option('--max-lag <duration>', 'exit 1 when the oldest pending event is older than this, e.g. 60s')
    .option('--max-dead <n>', 'exit 1 when more than <n> events are dead')
    .option('--top <n>', 'with --schemas: how many of the worst tenants to list by lag, by dead events and by partition upkeep lagging (--json lists all, each with its layout) (default: 10)')
    .addHelpText('after', '\nExit codes: 0 within limits; 1 a limit exceeded (the reason on stderr) or the database unreachable; 2 a bad flag.')
    .action(action(statusCommand))

  addSchemasFlag(databaseCommand(program, 'replay', 'put dead or processed events back in the queue, as if new (in chunks, safe while pollers run)'))
    .option('--dead', 'replay dead-lettered events')
    .option('--processed', 'replay processed events')
    .option('--type <pattern>', "only these event types: 'issue.created', 'issue.*' or '*'")
    .option('--id <ids...>', 'only these row ids (space or comma separated)')
    .option('--since <duration>', 'only events that died (--dead) or were processed (--processed) within this long, e.g. 2h')
    .option('--chunk-size <n>', 'events re-queued per transaction (1-100000) (default: 500)')
    .option('--yes', `replay even more than ${replayConfirmLimit} events`)
    .action(action(replayCommand))

  addSchemasFlag(databaseCommand(program, 'cleanup', 'delete old processed events (and, if asked, old dead events) in chunks; on a partitioned outbox, as its owner, first create the partitions ahead and drop those holding nothing to keep'))
    .requiredOption('--older-than <duration>', 'delete events processed longer ago than this, e.g. 7d')
    .option('--dead-older-than <duration>', 'also delete events dead longer ago than this, e.g. 30d (default: keep them)')
    .option('--chunk-size <n>', 'events deleted per transaction (1-100000) (default: 1000)')
    .option('--no-maintenance', `after the deletes, skip the VACUUM of the outbox and the rebuild (REINDEX CONCURRENTLY) of its pending indexes over ${bloatFactor} × the size their steady state needs, as after a long-held snapshot (both done only as the outbox's owner)`)
    .action(action(cleanupCommand))
}

async function statusCommand(command: Command): Promise<number> {
  const flags = command.opts<{ json?: boolean; watch?: string | true; maxLag?: string; maxDead?: string; top?: string }>()
  const limits: StatusLimits = {
    maxLagMs: flags.maxLag === undefined ? undefined : parseDuration(flags.maxLag, '--max-lag'),
    maxDead: flags.maxDead === undefined ? undefined : integerOption(flags.maxDead, '--max-dead', 0, 0, 2_147_483_647),
  }
  const watchMs = flags.watch === undefined ? undefined : flags.watch === true ? 2000 : durationOption(flags.watch, '--watch', 2000, 100, 86_400_000)
  const top = integerOption(flags.top, '--top', 10, 1, 10_000)
  const { schemas } = resolveOptions(componentOptionsFrom(command).poller, optionNamer(command))
  if (schemas !== undefined) {
    return withDatabase(command, 'status', async (sql, outbox) => {
      let first = true
      const render = async () => {
        const status = await outboxTenantsStatus(sql, schemas, outbox.table)
        // as the other commands with --schemas: a pattern that matches nothing is a typo, not a fleet in good health
        if (first && status.tenants.length === 0 && status.withoutOutbox.length === 0) throw new ConfigError(`no schema matches ${schemas.join(' ')}`)
        first = false
        return { text: flags.json ? `${JSON.stringify(status)}\n` : formatTenantsStatus(status, schemas, top), violations: tenantsStatusViolations(status, limits) }
      }
      return reportStatus(render, watchMs, !flags.json)
    })
  }
  return withDatabase(command, 'status', async (sql, outbox) => {
    await outboxCheckExists(sql, outbox, { current: true }) // status reads the registry of captured tables
    const render = async () => {
      const status = await outboxStatus(sql, outbox)
      return { text: flags.json ? `${JSON.stringify(status)}\n` : formatStatus(status, outbox.qualified), violations: statusViolations(status, limits) }
    }
    return reportStatus(render, watchMs, !flags.json)
  })
}

/** Prints the status once (exit 1 past a limit), or with `watchMs` redraws it until a signal. */
async function reportStatus(render: () => Promise<{ text: string; violations: string[] }>, watchMs: number | undefined, clear: boolean): Promise<number> {
  if (watchMs !== undefined) return watchStatus(render, watchMs, clear)
  const { text, violations } = await render()
  process.stdout.write(text)
  if (violations.length === 0) return ExitCode.ok
  console.error(`outbox-poller: ${violations.join('; ')}`)
  return ExitCode.failure
}

/** Redraws the status every `intervalMs` until SIGINT or SIGTERM, then returns 0 (limits are shown, not enforced). */
async function watchStatus(render: () => Promise<{ text: string; violations: string[] }>, intervalMs: number, clear: boolean): Promise<number> {
  let stop = () => {}
  const stopped = new Promise<void>((resolve) => (stop = resolve))
  let stopping = false
  const onSignal = () => {
    stopping = true
    stop()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    while (!stopping) {
      const { text, violations } = await render()
      const warnings = clear ? violations.map((v) => `\n! ${v}`).join('') : ''
      process.stdout.write(clear ? `${clearScreen}${text}${warnings}${warnings ? '\n' : ''}` : text)
      let timer: NodeJS.Timeout | undefined
      await Promise.race([stopped, new Promise((resolve) => (timer = setTimeout(resolve, intervalMs)))])
      clearTimeout(timer)
    }
    return ExitCode.ok
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

async function replayCommand(command: Command): Promise<number> {
  const flags = command.opts<{ dead?: boolean; processed?: boolean; type?: string; id?: string[]; since?: string; chunkSize?: string; yes?: boolean }>()
  if (Boolean(flags.dead) === Boolean(flags.processed)) throw new ConfigError('replay needs exactly one of --dead and --processed')
  if (flags.type !== undefined) parseEventTypePattern(flags.type, '--type')
  const ids = listFlag(flags.id)
  const badId = ids?.find((id) => !/^\d{1,19}$/.test(id))
  if (badId !== undefined) throw new ConfigError(`--id must be event row ids (got ${JSON.stringify(badId)})`)
  const sinceMs = flags.since === undefined ? undefined : parseDuration(flags.since, '--since')
  const chunkSize = integerOption(flags.chunkSize, '--chunk-size', 500, 1, 100_000)
  const kind = flags.dead ? 'dead' : 'processed'
  return withSchemas(command, 'replay', async (sql, outbox) => {
    await outboxCheckExists(sql, outbox)
    const selection: ReplaySelection = { dead: flags.dead, processed: flags.processed, typePattern: flags.type, ids, since: await databaseTimeAgo(sql, sinceMs) }
    const count = await outboxReplayCount(sql, outbox, selection)
    if (count > replayConfirmLimit && !flags.yes) {
      throw new ConfigError(`replay would re-queue ${count} ${kind} events (more than ${replayConfirmLimit}): pass --yes to confirm`)
    }
    const replayed = await outboxReplay(sql, outbox, { ...selection, chunkSize })
    console.log(`re-queued ${replayed} ${kind} event${replayed === 1 ? '' : 's'} in ${outbox.qualified}`)
    return ExitCode.ok
  })
}

async function cleanupCommand(command: Command): Promise<number> {
  const flags = command.opts<{ olderThan: string; deadOlderThan?: string; chunkSize?: string; maintenance: boolean }>()
  const olderThanMs = parseDuration(flags.olderThan, '--older-than')
  const deadOlderThanMs = flags.deadOlderThan === undefined ? undefined : parseDuration(flags.deadOlderThan, '--dead-older-than')
  const chunkSize = integerOption(flags.chunkSize, '--chunk-size', 1000, 1, 100_000)
  return withSchemas(command, 'cleanup', async (sql, outbox) => {
    await outboxCheckExists(sql, outbox)
    // partitions first (what a drop takes, no delete need write), reported after the deletes' line
    const by = await outboxPartitionBy(sql, outbox)
    const partitions = by === undefined ? undefined : await partitionUpkeep(sql, outbox, by, olderThanMs, deadOlderThanMs)
    const deleted = await outboxCleanup(sql, outbox, { olderThanMs, deadOlderThanMs, chunkSize })
    const dead = deadOlderThanMs === undefined ? '' : ` and ${deleted.dead} dead event${deleted.dead === 1 ? '' : 's'} older than ${flags.deadOlderThan}`
    console.log(`deleted ${deleted.processed} processed event${deleted.processed === 1 ? '' : 's'} older than ${flags.olderThan}${dead} from ${outbox.qualified}`)
    partitions?.()
    if (flags.maintenance) await maintain(sql, outbox)
    return ExitCode.ok
  })
}

/**
 * On a partitioned outbox, before the chunked deletes: the partitions ahead, then the drop of those holding
 * nothing to keep. Both need the outbox's owner; another role is told, and its deletes still run. Returns what
 * prints the outcome.
 */
async function partitionUpkeep(sql: Sql, outbox: OutboxTable, by: PartitionBy, olderThanMs: number, deadOlderThanMs: number | undefined): Promise<() => void> {
  if (!(await outboxOwned(sql, outbox))) return () => console.log(`partitions neither created ahead nor dropped: that needs the outbox's owner (run cleanup as the owner; the deletes still run)`)
  const upkeep = await outboxPartitionUpkeep(sql, outbox, by)
  const processedBefore = (await databaseTimeAgo(sql, olderThanMs))!
  const drops = await outboxDropDonePartitions(sql, outbox, { processedBefore, deadBefore: await databaseTimeAgo(sql, deadOlderThanMs) })
  return () => {
    if (upkeep.created.length > 0 || upkeep.skipped.length > 0) printUpkeep(outbox, { by, ...upkeep })
    printDrops(outbox, drops)
  }
}

/** VACUUM and the rebuild of bloated pending indexes after a cleanup: a role that may delete but does not own the outbox is told, not failed. */
async function maintain(sql: Sql, outbox: Parameters<typeof outboxMaintenance>[1]): Promise<void> {
  const result = await outboxMaintenance(sql, outbox)
  if (result === 'notOwner') {
    console.log(`not vacuumed, bloated indexes not rebuilt: that needs the outbox's owner (run cleanup as the owner, or pass --no-maintenance)`)
    return
  }
  for (const { index, bytesBefore, bytesAfter } of result.rebuilt) console.log(`rebuilt bloated index ${index}: ${kilobytes(bytesBefore)} -> ${kilobytes(bytesAfter)}`)
  if (result.skipped !== undefined) console.log(`bloated pending indexes not rebuilt: ${result.skipped}`)
}

function kilobytes(bytes: number): string {
  return `${Math.round(bytes / 1024).toLocaleString('en')} kB`
}

/** `ms` before the database's clock (the clock processed_at and dead_at were written with). */
export async function databaseTimeAgo(sql: Sql, ms: number | undefined): Promise<Date | undefined> {
  if (ms === undefined) return undefined
  const [row] = await sql<{ since: Date }[]>`select now() - ${ms}::float8 * interval '1 millisecond' as since`
  return row!.since
}
