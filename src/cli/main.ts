import { Command, CommanderError, Option } from 'commander'
import { ConfigError, ConnectionError, errorMessage } from '../errors.js'
import { registerBackfillCommand } from './backfill-command.js'
import { registerConsoleCommand } from './console-command.js'
import { registerDeadCommand } from './dead-command.js'
import { ExitCode } from '../supervisor/exit-codes.js'
import { type CommandAction, registerMonitorCommands } from './monitor-commands.js'
import { registerPauseCommands } from './pause-commands.js'
import { addConnectionFlags, addPollerFlags, addSchemasFlag, collectValues, databaseCommand, scratchCommand } from './options.js'

const exitCodesHelp = `
Exit codes: 0 success; 1 runtime failure (database unreachable, failed health check);
2 usage or configuration error; 75 worker drained for a memory restart.`

// A command's module loads when the command runs: a worker never loads migrations (kysely), bench or demo.
const admin = () => import('./admin-commands.js')

function buildProgram(setExitCode: (code: number) => void): Command {
  const program = new Command('outbox-poller')
    .description('Transactional outbox for PostgreSQL: capture triggers write every change of a table into an outbox;\npoller replicas claim batches with FOR UPDATE SKIP LOCKED and run your handlers.')
    .version(process.env.npm_package_version ?? '0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText('after', exitCodesHelp)
    // inherited by every subcommand created after this (commander copies both): each throws instead of exiting
    .exitOverride()
  // commander calls an action with the positional arguments, the options, then the command itself
  const action: CommandAction = (fn) => async (...args: unknown[]) => setExitCode(await fn(args.at(-1) as Command, ...(args.slice(0, -2) as string[])))

  addPollerFlags(addConnectionFlags(program.command('run', { isDefault: true })))
    .description('run a poller replica (the default command): claim, handle, settle, repeat')
    .addOption(new Option('--handlers <module>', 'module whose default export is a handler function or an object of event-type patterns to handlers').env('OUTBOX_POLLER_HANDLERS'))
    .option('--sink <[pattern=]url>', 'relay events to RabbitMQ (amqp://…?exchange=x), NATS JetStream (nats://…?stream=S), Redis Streams (redis://…?stream=s) or a webhook (https://…); repeatable (env: OUTBOX_POLLER_SINKS, one per line or space separated)', collectValues, [] as string[])
    .addOption(new Option('--sink-secret <secret>', 'webhook signing secret (whsec_… or any text); prefer the env or --sink-secret-file, which ps does not show').env('OUTBOX_POLLER_SINK_SECRET'))
    .addOption(new Option('--sink-secret-file <path>', 'file holding the webhook signing secret (a trailing newline is dropped)').env('OUTBOX_POLLER_SINK_SECRET_FILE'))
    .option('--no-supervise', 'run the worker alone, without the supervising process (no crash restarts, no poison isolation); over --memory-limit it drains and exits 75 (env: OUTBOX_POLLER_SUPERVISE=false)')
    .addHelpText('after', '\nExample:\n  DATABASE_URL=postgres://localhost/app outbox-poller --batch-size 250 --handlers ./handlers.js')
    .action(action(async (command) => (await import('./run-command.js')).runCommand(command)))

  addSchemasFlag(databaseCommand(program, 'migrate', 'create or upgrade the outbox table, its indexes and trigger functions (idempotent; safe when replicas start together); with --schemas, a schema also gets the grants recorded in the other matching schemas'))
    .option('--ordering <mode>', 'entity or group: also create the indexes that pollers with that --ordering need (concurrently on a large outbox); run it as the outbox\'s owner before starting them')
    .option('--fail-fast', 'with --schemas: stop at the first schema whose migration fails (default: name it and go on with the others)')
    .option('--partition-by <width>', 'day or hour: create the outbox range-partitioned on created_at, partitions kept ready ahead (only when migrate creates the outbox; see the README, "Partitioned outbox"); later runs, as the owner, create the partitions ahead')
    .action(action(async (command) => (await admin()).migrateCommand(command)))

  addSchemasFlag(databaseCommand(program, 'capture <table>', "capture a table's INSERT / UPDATE / DELETE / TRUNCATE into the outbox (again on a captured table: replace its options); <table> as SQL writes it: issues, app.orders, '\"Order Items\"'"))
    .requiredOption('--entity <name>', 'entity type: events are <entity>.created, .updated, .deleted, .truncated')
    .option('--key <column>', "column holding the entity id (default: the table's primary key)")
    .option('--ignore-columns <columns...>', 'columns whose change alone emits no event (comma or space separated), e.g. updated_at')
    .option('--columns <columns...>', 'capture only these columns (the key column always travels too)')
    .option('--exclude-columns <columns...>', 'columns that never leave the database, e.g. password_hash,token')
    .option('--soft-delete-column <column>', 'an update setting it emits <entity>.deleted; clearing it, <entity>.restored')
    .option('--events <events...>', 'capture a subset of insert, update, delete, truncate, with at least one of the first three (default: all four)')
    .option('--mode <mode>', 'row: a trigger call per row; statement: one set-based call per statement; auto: statement, or row for a partitioned table (default: auto)')
    .option('--group-by <column>', "every event carries this column's value as its group_key (a delete the old row's), for --ordering group, e.g. order_id (default: none)")
    .action(action(async (command, table) => (await admin()).captureCommand(table, command)))

  databaseCommand(program, 'move-captures', 'move every captured table of the outbox to another outbox of its schema (e.g. a partitioned one created beside it), same options, in one transaction')
    .requiredOption('--to-table <table>', 'the outbox to capture into from now on, migrated first (outbox-poller migrate --table <table>)')
    .action(action(async (command) => (await admin()).moveCapturesCommand(command)))

  databaseCommand(program, 'uncapture <table>', 'stop capturing a table')
    .action(action(async (command, table) => (await admin()).uncaptureCommand(table, command)))

  databaseCommand(program, 'captures', 'list the tables captured into the outbox')
    .option('--json', 'print JSON')
    .action(action(async (command) => (await admin()).capturesCommand(command)))

  addSchemasFlag(databaseCommand(program, 'grant <role>', "grant a poller role what polling needs (the outbox's schema, SELECT and UPDATE on the outbox and its wake-up flag), nothing more; recorded, so migrate --schemas grants it in tenant schemas created later"))
    .option('--cleanup', 'also grant DELETE, for `outbox-poller cleanup`')
    .action(action(async (command, role) => (await admin()).grantCommand(role, command)))

  registerBackfillCommand(program, action)
  registerToolCommands(program, action)
  registerMonitorCommands(program, action)
  registerDeadCommand(program, action)
  registerPauseCommands(program, action)
  registerConsoleCommand(program, action)
  return program
}

/** `demo` and `bench`: they work in a scratch database of their own. */
function registerToolCommands(program: Command, action: CommandAction): void {
  scratchCommand(program, 'demo', 'see it work: an embedded PostgreSQL (or a schema of DATABASE_URL), a captured sample table, replicas, a writer; a live line, then a summary that checks every guarantee')
    .option('--duration <duration>', 'how long the writer writes', '20s')
    .option('--replicas <n>', 'poller replicas (processes)', '3')
    .option('--rate <n>', 'steady changes per second', '200')
    .option('--burst <n>', 'inserts written at once, a third of the way in', '20000')
    .action(action(async (command) => (await import('./demo-command.js')).demoCommand(command)))

  scratchCommand(program, 'bench', 'measure drain throughput and memory against a bare SKIP LOCKED loop on a minimal table and on the outbox, commit-to-handler latency and capture cost (embedded PostgreSQL unless DATABASE_URL is set; works in a schema of its own, dropped at the end)')
    .option('--events <n>', 'events pre-filled for each drain run (the capture part grows an outbox to 10 × this many pending events)', '100000')
    .option('--seconds <n>', 'seconds each latency and capture run lasts (1-600)', '5')
    .option('--only <parts...>', 'run only some parts: drain, latency, capture, relay')
    .option('--json', 'print the results as JSON on stdout (progress goes to stderr)')
    .option('--hold-snapshot <duration>', 'instead: latency at --rate captured rows/s for --seconds, then with a REPEATABLE READ snapshot held this long (e.g. 3m), and the pending index before, during and after (cleanup\'s rebuild)')
    .option('--soak <duration>', 'instead: a steady --rate captured rows/s with 3 replicas and a cleanup every tenth of the run, e.g. 10m: outbox and pending index sizes, latency per tenth, exactly-once')
    .option('--rate <n>', 'captured rows per second for --hold-snapshot and --soak', '2000')
    .option('--partition-by <width>', 'instead: the drain of the plain outbox against one partitioned by day or hour, and one that also keeps a week of past partitions, back to back, --rounds times (1 and 3 pollers × batch 250)')
    .option('--tenants <n>', 'instead: this many tenant outboxes served by one replica (--schemas): its idle cost, then --hot tenants with --events pending each while every other gets one event every 2 s, for --seconds, --rounds times: total events/s and the cold events\' latency')
    .option('--rounds <n>', 'rounds of --partition-by and --tenants (1-20)', '3')
    .option('--hot <n>', 'with --tenants: tenants with a backlog', '1')
    .option('--handler-ms <n>', 'with --tenants: how long the handler takes per event', '1')
    .option('--tenant-concurrency <n>', 'with --tenants: the replica\'s --tenant-concurrency', '1')
    .option('--pooler-url <url>', 'also measure latency with the poller behind this pooler (PgBouncer in transaction mode, in front of --database-url): LISTEN on a direct --listen-url, and --no-listen')
    .option('--sink <[pattern=]url>', 'relay to this sink (a broker URL, or webhook for a local receiver), against the no-op drain and the broker\'s own ceiling (repeatable)', collectValues, [] as string[])
    .addOption(new Option('--sink-secret <secret>', 'webhook signing secret for a webhook --sink').env('OUTBOX_POLLER_SINK_SECRET'))
    .action(action(async (command) => (await import('./bench-command.js')).benchCommand(command)))
}

/** Runs the CLI and returns the exit code. Only this layer prints errors; user mistakes print one line, no stack. */
export async function main(argv: string[]): Promise<number> {
  let exitCode: number = ExitCode.ok
  const program = buildProgram((code) => (exitCode = code))
  try {
    await program.parseAsync(argv)
    return exitCode
  } catch (error) {
    if (error instanceof CommanderError) {
      // commander already printed its message (or the help / version)
      return error.exitCode === 0 ? ExitCode.ok : ExitCode.usage
    }
    if (error instanceof ConfigError) {
      console.error(`outbox-poller: ${error.message}`)
      return ExitCode.usage
    }
    if (error instanceof ConnectionError) {
      console.error(`outbox-poller: ${error.message}`)
      return ExitCode.failure
    }
    console.error(`outbox-poller: ${errorMessage(error)}`)
    if (process.env.OUTBOX_POLLER_DEBUG) console.error(error)
    return ExitCode.failure
  }
}
