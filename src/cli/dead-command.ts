import type { Command } from 'commander'
import { parseDuration } from '../duration.js'
import { ConfigError } from '../errors.js'
import { type DeadSelection, outboxDeadCount, outboxDeadEvents, outboxDeleteDead } from '../ops/dead.js'
import { outboxCheckExists } from '../outbox/outbox-checks.js'
import { parseEventTypePattern } from '../poller/event-type-pattern.js'
import { integerOption } from '../poller/poller-options.js'
import { ExitCode } from '../supervisor/exit-codes.js'
import { databaseTimeAgo, type CommandAction, replayConfirmLimit } from './monitor-commands.js'
import { addSchemasFlag, databaseCommand, listFlag } from './options.js'
import { formatDeadEvents } from './status-report.js'
import { withSchemas } from './with-schemas.js'

/** Adds `dead` (list, or with --delete delete, the dead events of a selection) to the program. */
export function registerDeadCommand(program: Command, action: CommandAction): void {
  addSchemasFlag(databaseCommand(program, 'dead', 'list dead-lettered events, most recently dead first; with --delete, delete them for good')
    .option('--type <pattern>', "only these event types: 'issue.created', 'issue.*' or '*'")
    .option('--id <ids...>', 'only these row ids (space or comma separated)')
    .option('--since <duration>', 'only events that died within this long, e.g. 2h')
    .option('--limit <n>', 'most events listed (1-10000) (default: 50)')
    .option('--json', 'print JSON')
    .option('--delete', 'delete the selected dead events instead of listing them (in chunks, safe while pollers run)')
    .option('--chunk-size <n>', 'with --delete: events deleted per transaction (1-100000) (default: 1000)')
    .option('--yes', `with --delete: delete even more than ${replayConfirmLimit} events`))
    .action(action(deadCommand))
}

async function deadCommand(command: Command): Promise<number> {
  const flags = command.opts<{ type?: string; id?: string[]; since?: string; limit?: string; json?: boolean; delete?: boolean; chunkSize?: string; yes?: boolean }>()
  if (flags.type !== undefined) parseEventTypePattern(flags.type, '--type')
  const ids = listFlag(flags.id)
  const badId = ids?.find((id) => !/^\d{1,19}$/.test(id))
  if (badId !== undefined) throw new ConfigError(`--id must be event row ids (got ${JSON.stringify(badId)})`)
  const sinceMs = flags.since === undefined ? undefined : parseDuration(flags.since, '--since')
  const limit = integerOption(flags.limit, '--limit', 50, 1, 10_000)
  const chunkSize = integerOption(flags.chunkSize, '--chunk-size', 1000, 1, 100_000)
  return withSchemas(command, flags.delete ? 'dead-delete' : 'status', async (sql, outbox) => {
    await outboxCheckExists(sql, outbox, { current: true })
    const selection: DeadSelection = { typePattern: flags.type, ids, since: await databaseTimeAgo(sql, sinceMs) }
    if (flags.delete) {
      const count = await outboxDeadCount(sql, outbox, selection)
      if (count > replayConfirmLimit && !flags.yes) throw new ConfigError(`dead --delete would delete ${count} dead events (more than ${replayConfirmLimit}): pass --yes to confirm`)
      const deleted = await outboxDeleteDead(sql, outbox, { ...selection, chunkSize })
      console.log(`deleted ${deleted} dead event${deleted === 1 ? '' : 's'} from ${outbox.qualified}`)
      return ExitCode.ok
    }
    const events = await outboxDeadEvents(sql, outbox, { ...selection, limit })
    if (flags.json) console.log(JSON.stringify(events))
    else if (events.length === 0) console.log(`no dead events${flags.type ? ` of type ${flags.type}` : ''} in ${outbox.qualified}`)
    else {
      process.stdout.write(formatDeadEvents(events))
      if (events.length === limit) console.log(`(the ${limit} most recent; --limit shows more)`)
    }
    return ExitCode.ok
  })
}
