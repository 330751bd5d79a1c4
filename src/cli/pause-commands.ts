import { hostname, userInfo } from 'node:os'
import type { Command } from 'commander'
import { outboxPause, outboxResume } from '../ops/pause.js'
import { outboxCheckExists } from '../outbox/outbox-checks.js'
import { parseEventTypePattern } from '../poller/event-type-pattern.js'
import { integerOption } from '../poller/poller-options.js'
import { ExitCode } from '../supervisor/exit-codes.js'
import type { CommandAction } from './monitor-commands.js'
import { databaseCommand } from './options.js'
import { withDatabase } from './with-database.js'

/** Adds `pause <pattern>` and `resume <pattern>` to the program. */
export function registerPauseCommands(program: Command, action: CommandAction): void {
  databaseCommand(program, 'pause <pattern>', "stop handling events of these types on every replica ('billing.*', 'billing.invoice.created' or '*'): they wait, pending, until resumed")
    .action(action((command, pattern) => pauseCommand(command, pattern!)))

  databaseCommand(program, 'resume <pattern>', 'handle the events of a paused pattern again, from where they were (repeat it safely: it also releases any event no pause matches)')
    .option('--chunk-size <n>', 'events released per transaction (1-100000) (default: 5000)')
    .action(action((command, pattern) => resumeCommand(command, pattern!)))
}

async function pauseCommand(command: Command, pattern: string): Promise<number> {
  parseEventTypePattern(pattern, 'pattern')
  return withDatabase(command, 'pause', async (sql, outbox) => {
    await outboxCheckExists(sql, outbox, { current: true })
    const added = await outboxPause(sql, outbox, pattern, `cli ${userInfo().username}@${hostname()}`)
    console.log(added ? `paused ${pattern} in ${outbox.qualified}: every replica stops handling these events` : `${pattern} was already paused in ${outbox.qualified}`)
    return ExitCode.ok
  })
}

async function resumeCommand(command: Command, pattern: string): Promise<number> {
  parseEventTypePattern(pattern, 'pattern')
  const chunkSize = integerOption(command.opts<{ chunkSize?: string }>().chunkSize, '--chunk-size', 5000, 1, 100_000)
  return withDatabase(command, 'pause', async (sql, outbox) => {
    await outboxCheckExists(sql, outbox, { current: true })
    const { wasPaused, released } = await outboxResume(sql, outbox, pattern, { chunkSize })
    console.log(`${wasPaused ? 'resumed' : 'was not paused:'} ${pattern} in ${outbox.qualified}; ${released} waiting event${released === 1 ? '' : 's'} back in the queue`)
    return ExitCode.ok
  })
}
