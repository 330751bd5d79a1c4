import { readFile } from 'node:fs/promises'
import { type Command, Option } from 'commander'
import { defaultConsolePort, resolveConsoleOptions } from '../console/console-options.js'
import { ConfigError, errorMessage } from '../errors.js'
import { createLogger, type LogLevel } from '../log.js'
import { resolveHttpOptions } from '../observe/http-options.js'
import { outboxCheckExists } from '../outbox/outbox-checks.js'
import { ExitCode } from '../supervisor/exit-codes.js'
import type { CommandAction } from './monitor-commands.js'
import { databaseCommand } from './options.js'
import { withDatabase } from './with-database.js'

/** Adds `console` to the program. */
export function registerConsoleCommand(program: Command, action: CommandAction): void {
  databaseCommand(program, 'console', 'a web console: the outbox at a glance, event types, dead events (replay, delete), replicas, captured tables, a live tail, pause and resume')
    .option('--http <host:port>', `where to listen; anywhere but loopback needs a token (default: 127.0.0.1:${defaultConsolePort})`)
    .addOption(new Option('--token-file <path>', 'file holding the token that enables actions (and reading, off loopback); a trailing newline is dropped (env: OUTBOX_POLLER_CONSOLE_TOKEN holds the token itself)').env('OUTBOX_POLLER_CONSOLE_TOKEN_FILE'))
    .option('--show-payloads', "show events' payloads (they can hold personal data) (default: hidden)")
    .addHelpText('after', `\nWithout a token the console is read-only and binds only to a loopback address; with one, sign in once in the browser.\nExample:\n  OUTBOX_POLLER_CONSOLE_TOKEN=$(cat ~/.outbox-console-token) outbox-poller console --http 127.0.0.1:${defaultConsolePort}`)
    .action(action(consoleCommand))
}

async function consoleCommand(command: Command): Promise<number> {
  const flags = command.opts<{ http?: string; tokenFile?: string; showPayloads?: boolean; logLevel: LogLevel }>()
  const listen = resolveHttpOptions({ http: flags.http ?? `127.0.0.1:${defaultConsolePort}` }, () => '--http').listen
  if (listen === undefined) throw new ConfigError('--http must be host:port for the console')
  const token = await readToken(flags.tokenFile)
  const options = resolveConsoleOptions({ host: listen.host, port: listen.port, token, showPayloads: flags.showPayloads }, { listen: '--http', token: '--token-file or OUTBOX_POLLER_CONSOLE_TOKEN' })
  const log = createLogger(flags.logLevel, 'outbox-poller-console')
  return withDatabase(command, 'console', async (sql, outbox) => {
    await outboxCheckExists(sql, outbox, { current: true })
    let server
    try {
      server = await (await import('../console/console-server.js')).startConsole({ sql, outbox, options, log })
    } catch (error) {
      if (error instanceof ConfigError) throw error
      throw new ConfigError(`--http ${listen.host}:${listen.port}: ${errorMessage(error)}`)
    }
    console.error(`outbox-poller console on ${server.url}${options.token === undefined ? ' (read-only: no token)' : ''}`)
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve)
      process.once('SIGTERM', resolve)
    })
    await server.close()
    return ExitCode.ok
  })
}

/** The token: from --token-file, else OUTBOX_POLLER_CONSOLE_TOKEN; undefined when neither is set. */
async function readToken(file: string | undefined): Promise<string | undefined> {
  if (file !== undefined) {
    try {
      return (await readFile(file, 'utf8')).replace(/\r?\n$/, '')
    } catch (error) {
      throw new ConfigError(`--token-file ${file}: ${errorMessage(error)}`)
    }
  }
  return process.env.OUTBOX_POLLER_CONSOLE_TOKEN || undefined
}
