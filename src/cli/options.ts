import { type Command, Option } from 'commander'
import { formatByteSize } from '../byte-size.js'
import { formatDuration } from '../duration.js'
import { ConfigError } from '../errors.js'
import type { HttpOptions } from '../observe/http-options.js'
import { defaults, type PollerOptions } from '../poller/poller-options.js'
import { type SupervisorOptions, supervisorDefaults } from '../supervisor/supervisor-options.js'
import { checkedDatabaseUrl } from './database-url-option.js'
import { logLevels } from '../log.js'

/** The options of each component, as their flags gave them: the CLI resolves each with its own function. */
export interface ComponentOptions {
  poller: PollerOptions
  supervisor: SupervisorOptions
  http: HttpOptions
}

/** Every option flag: its component and option key, flag, env variable, help and default shown in --help. */
type FlagSpec = {
  [C in keyof ComponentOptions]: { component: C; key: keyof ComponentOptions[C] & string; flag: string; env: string; help: string; shownDefault?: string }
}[keyof ComponentOptions]

const pollerFlags: FlagSpec[] = [
  { component: 'poller', key: 'batchSize', flag: '--batch-size <n>', env: 'OUTBOX_POLLER_BATCH_SIZE', help: 'most events claimed per batch (1-10000)', shownDefault: String(defaults.batchSize) },
  { component: 'poller', key: 'batchMaxBytes', flag: '--batch-max-bytes <size>', env: 'OUTBOX_POLLER_BATCH_MAX_BYTES', help: 'most payload and metadata bytes claimed per batch, as stored (512kB, 64MB, 1048576); a bigger event is claimed alone', shownDefault: formatByteSize(defaults.batchMaxBytes) },
  { component: 'poller', key: 'concurrency', flag: '--concurrency <n>', env: 'OUTBOX_POLLER_CONCURRENCY', help: "handlers running at once within a batch, or across the tenants' batches of a shared transaction (1-10000)", shownDefault: String(defaults.concurrency) },
  { component: 'poller', key: 'txMode', flag: '--tx-mode <mode>', env: 'OUTBOX_POLLER_TX_MODE', help: "how handlers share the batch transaction through ctx.tx(): event (a savepoint per event, taking turns) or batch (one savepoint for the batch, statements pipelined; when a writing event fails, the batch's other writing events run again); not with --schemas", shownDefault: defaults.txMode },
  { component: 'poller', key: 'intervalMin', flag: '--interval-min <duration>', env: 'OUTBOX_POLLER_INTERVAL_MIN', help: 'wait after the first empty poll; doubles while idle', shownDefault: formatDuration(defaults.intervalMinMs) },
  { component: 'poller', key: 'intervalMax', flag: '--interval-max <duration>', env: 'OUTBOX_POLLER_INTERVAL_MAX', help: 'longest wait between polls while idle (a missed wake-up delays an event at most this long)', shownDefault: formatDuration(defaults.intervalMaxMs) },
  { component: 'poller', key: 'handlerTimeout', flag: '--handler-timeout <duration>', env: 'OUTBOX_POLLER_HANDLER_TIMEOUT', help: 'an async handler still running after this fails its event', shownDefault: formatDuration(defaults.handlerTimeoutMs) },
  { component: 'poller', key: 'maxAttempts', flag: '--max-attempts <n>', env: 'OUTBOX_POLLER_MAX_ATTEMPTS', help: 'failed attempts before an event is dead-lettered (1-1000)', shownDefault: String(defaults.maxAttempts) },
  { component: 'poller', key: 'retryDelay', flag: '--retry-delay <duration>', env: 'OUTBOX_POLLER_RETRY_DELAY', help: 'delay before the first retry; doubles per attempt, with jitter', shownDefault: formatDuration(defaults.retryDelayMs) },
  { component: 'poller', key: 'retryDelayMax', flag: '--retry-delay-max <duration>', env: 'OUTBOX_POLLER_RETRY_DELAY_MAX', help: 'longest delay between retries', shownDefault: formatDuration(defaults.retryDelayMaxMs) },
  { component: 'poller', key: 'unmatched', flag: '--unmatched <policy>', env: 'OUTBOX_POLLER_UNMATCHED', help: 'events no handler matches: process (mark processed) or hold (leave for a replica that has a handler)', shownDefault: defaults.unmatched },
  { component: 'poller', key: 'ordering', flag: '--ordering <mode>', env: 'OUTBOX_POLLER_ORDERING', help: "none; entity: one entity's events in id order, never two at a time, across replicas; group: the same per group_key (and per entity; no group: by entity) (every replica must agree)", shownDefault: defaults.ordering },
  { component: 'poller', key: 'orderingOnDead', flag: '--ordering-on-dead <policy>', env: 'OUTBOX_POLLER_ORDERING_ON_DEAD', help: "with --ordering entity or group: continue (a dead event does not hold back its entity's or group's later events) or block (they wait for a replay)", shownDefault: defaults.orderingOnDead },
  { component: 'supervisor', key: 'memoryLimitMb', flag: '--memory-limit <MB>', env: 'OUTBOX_POLLER_MEMORY_LIMIT_MB', help: 'worker RSS limit in MB (16-1048576)', shownDefault: String(supervisorDefaults.memoryLimitMb) },
  { component: 'supervisor', key: 'memoryCheckInterval', flag: '--memory-check-interval <duration>', env: 'OUTBOX_POLLER_MEMORY_CHECK_INTERVAL', help: 'how often the worker memory is sampled', shownDefault: formatDuration(supervisorDefaults.memoryCheckIntervalMs) },
  { component: 'poller', key: 'drainTimeout', flag: '--drain-timeout <duration>', env: 'OUTBOX_POLLER_DRAIN_TIMEOUT', help: 'a stopping or restarting worker still busy after this is killed (its batch rolls back)', shownDefault: 'handler timeout + 10s' },
  { component: 'supervisor', key: 'crashLimit', flag: '--crash-limit <n>', env: 'OUTBOX_POLLER_CRASH_LIMIT', help: 'worker crashes within --crash-window that make the supervisor give up and exit 1', shownDefault: String(supervisorDefaults.crashLimit) },
  { component: 'supervisor', key: 'crashWindow', flag: '--crash-window <duration>', env: 'OUTBOX_POLLER_CRASH_WINDOW', help: 'window counted by --crash-limit', shownDefault: formatDuration(supervisorDefaults.crashWindowMs) },
  { component: 'http', key: 'http', flag: '--http <host:port>', env: 'OUTBOX_POLLER_HTTP', help: 'serve /healthz, /readyz and /metrics (a bare port binds 127.0.0.1)', shownDefault: 'off' },
  { component: 'poller', key: 'listenUrl', flag: '--listen-url <url>', env: 'OUTBOX_POLLER_LISTEN_URL', help: 'a direct connection (no pooler) used only to LISTEN for wake-ups, when --database-url goes through a pooler in transaction mode', shownDefault: 'LISTEN on --database-url' },
  { component: 'poller', key: 'schemas', flag: '--schemas <patterns...>', env: 'OUTBOX_POLLER_SCHEMAS', help: "serve the outbox of every schema matching these patterns (tenant_*, admin; * is the only wildcard, _ is literal), from the same connections; excludes --schema", shownDefault: 'one outbox, --schema' },
  { component: 'poller', key: 'discoverInterval', flag: '--discover-interval <duration>', env: 'OUTBOX_POLLER_DISCOVER_INTERVAL', help: 'with --schemas: how often new and dropped schemas are looked for', shownDefault: formatDuration(defaults.discoverIntervalMs) },
  { component: 'poller', key: 'tenantConcurrency', flag: '--tenant-concurrency <n>', env: 'OUTBOX_POLLER_TENANT_CONCURRENCY', help: "with --schemas: batches of different tenants in flight at once, one claim connection each (1-100); with 1 a slow tenant's batch holds the others back", shownDefault: String(defaults.tenantConcurrency) },
  { component: 'poller', key: 'connectTimeout', flag: '--connect-timeout <duration>', env: 'OUTBOX_POLLER_CONNECT_TIMEOUT', help: 'how long start-up retries an unreachable database', shownDefault: formatDuration(defaults.connectTimeoutMs) },
]

const outboxFlags: FlagSpec[] = [
  { component: 'poller', key: 'schema', flag: '--schema <name>', env: 'OUTBOX_POLLER_SCHEMA', help: "the outbox's schema", shownDefault: defaults.schema },
  { component: 'poller', key: 'table', flag: '--table <name>', env: 'OUTBOX_POLLER_TABLE', help: 'the outbox table', shownDefault: defaults.table },
]

function addFlags(command: Command, specs: FlagSpec[]): Command {
  for (const spec of specs) {
    // Defaults are applied by each component's resolver, not by commander; help only shows them.
    const help = spec.shownDefault === undefined ? spec.help : `${spec.help} (default: ${spec.shownDefault})`
    command.addOption(new Option(spec.flag, help).env(spec.env))
  }
  return command
}

/** Connection, outbox and logging flags: every command that talks to the database has them. */
export function addConnectionFlags(command: Command): Command {
  command.addOption(new Option('--database-url <url>', 'PostgreSQL connection string').env('DATABASE_URL'))
  addFlags(command, outboxFlags)
  command.addOption(new Option('--log-level <level>', 'log level').choices(logLevels).env('OUTBOX_POLLER_LOG_LEVEL').default('info'))
  return command
}

/** A subcommand that talks to the database: the connection, outbox and logging flags, and its description. */
export function databaseCommand(parent: Command, nameAndArgs: string, description: string): Command {
  return addConnectionFlags(parent.command(nameAndArgs)).description(description)
}

/** A subcommand that works in a scratch database of its own (`demo`, `bench`): no --schema, --table or --log-level. */
export function scratchCommand(parent: Command, name: string, description: string): Command {
  return parent.command(name).description(description).addOption(scratchDatabaseOption())
}

/** `--schemas` on a one-shot command: the same flag and env variable as the run command's, for the outbox of every matching schema. */
export function addSchemasFlag(command: Command): Command {
  return command.addOption(new Option('--schemas <patterns...>', "work on the outbox of every schema matching these patterns (tenant_*, admin; * is the only wildcard), one after the other; a schema that fails is named and the others go on; excludes --schema").env('OUTBOX_POLLER_SCHEMAS'))
}

export function addPollerFlags(command: Command): Command {
  return addFlags(command, pollerFlags)
    .option('--no-listen', 'never LISTEN, only poll: a new event waits at most --interval-max (env: OUTBOX_POLLER_LISTEN=false)')
    .option('--no-overlap', "when every handler is a redis or amqp --sink: one batch at a time, on one claim connection; by default the next batch is claimed while the previous one's confirms are outstanding, each in its own transaction on a second connection (env: OUTBOX_POLLER_OVERLAP=false)")
    .option('--metrics-per-schema', 'with --schemas and --http: a schema label on the per-event counters and the backlog gauges, one series per tenant (env: OUTBOX_POLLER_METRICS_PER_SCHEMA=true; default: totals over every tenant)')
}

const componentFlags = [...pollerFlags, ...outboxFlags]

/** `--batch-size` of `--batch-size <n>`. */
function longFlag(spec: FlagSpec): string {
  return spec.flag.split(' ')[0]!
}

/** The key under which commander stores a flag's value, if this command has the flag. */
function flagAttribute(command: Command, spec: FlagSpec): string | undefined {
  return command.options.find((option) => option.long === longFlag(spec))?.attributeName()
}

/** Names an option as the user gave it: `--batch-size`, or `OUTBOX_POLLER_BATCH_SIZE` when it came from the environment. */
export function optionNamer(command: Command): (key: string) => string {
  return (key) => {
    const spec = componentFlags.find((candidate) => candidate.key === key)
    if (spec === undefined) return key
    const attribute = flagAttribute(command, spec)
    return attribute !== undefined && command.getOptionValueSource(attribute) === 'env' ? spec.env : longFlag(spec)
  }
}

/** The options that commander parsed, by component, as strings for each component's resolver to parse and validate. */
export function componentOptionsFrom(command: Command): ComponentOptions {
  const values = command.opts<Record<string, string | undefined>>()
  const options: Record<keyof ComponentOptions, Record<string, string>> = { poller: {}, supervisor: {}, http: {} }
  for (const spec of componentFlags) {
    const attribute = flagAttribute(command, spec)
    if (attribute !== undefined && values[attribute] !== undefined) options[spec.component][spec.key] = values[attribute]
  }
  const has = (flag: string) => command.options.some((option) => option.long === flag)
  const listen = has('--no-listen') ? (command.opts<{ listen?: boolean }>().listen === false ? false : booleanEnv('OUTBOX_POLLER_LISTEN')) : undefined
  const overlap = has('--no-overlap') ? (command.opts<{ overlap?: boolean }>().overlap === false ? false : booleanEnv('OUTBOX_POLLER_OVERLAP')) : undefined
  const perSchema = has('--metrics-per-schema') ? (command.opts<{ metricsPerSchema?: boolean }>().metricsPerSchema === true ? true : booleanEnv('OUTBOX_POLLER_METRICS_PER_SCHEMA')) : undefined
  return {
    ...options,
    poller: { ...options.poller, ...(listen === undefined ? {} : { listen }), ...(overlap === undefined ? {} : { overlap }) },
    http: { ...options.http, ...(perSchema === undefined ? {} : { metricsPerSchema: perSchema }) },
  }
}

/** A true-or-false environment variable (a flag, when given, wins); undefined: unset, the component's default. */
function booleanEnv(name: string): boolean | undefined {
  const env = process.env[name]
  if (env === undefined || env === '') return undefined
  if (env === 'true' || env === '1') return true
  if (env === 'false' || env === '0') return false
  throw new ConfigError(`${name} must be true or false (got ${JSON.stringify(env)})`)
}

/** The connection string, checked; errors name DATABASE_URL or --database-url, whichever the user gave. */
export function databaseUrlFrom(command: Command): string {
  const url = checkedDatabaseUrl(command)
  if (!url) throw new ConfigError('no database: set DATABASE_URL or pass --database-url postgres://user@host:5432/db')
  return url
}

/** `a,b c` → ['a', 'b', 'c']: a variadic flag's values, given comma or space separated. */
export function listFlag(values: string[] | undefined): string[] | undefined {
  return values?.flatMap((item) => item.split(',')).map((item) => item.trim()).filter(Boolean)
}

/** For repeatable flags (`--sink a --sink b`): commander's argument parser that collects every value. */
export function collectValues(value: string, previous: string[]): string[] {
  return [...previous, value]
}

/** `--database-url` of the commands that start an embedded PostgreSQL when it is not given. */
function scratchDatabaseOption(): Option {
  return new Option('--database-url <url>', 'PostgreSQL to use, in a schema of its own dropped at the end (default: an embedded PostgreSQL)').env('DATABASE_URL')
}
