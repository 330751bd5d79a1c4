import type { BatchReport } from './batch-report.js'
import { parseByteSize } from '../byte-size.js'
import { checkDatabaseUrl } from '../database/database-url.js'
import { parseDuration } from '../duration.js'
import { ConfigError } from '../errors.js'
import type { HandlerMap, Logger } from '../types.js'
import type { TxMode } from './dispatch-batch.js'
import { parseSchemaPatterns } from '../tenants/schema-pattern.js'

/** What to do with an event that no registered handler matches. */
export type UnmatchedPolicy = 'process' | 'hold'
/**
 * `entity`: one entity's events are handled in id order and never two at a time, across all replicas. `group`: the
 * same for one group's events (`group_key`), and for one entity's; events without a group are ordered by entity.
 */
export type Ordering = 'none' | 'entity' | 'group'
/** Under `--ordering entity` or `group`, whether a dead event holds back its entity's (and group's) later events. */
export type OrderingOnDead = 'continue' | 'block'

/** The poller's defaults: each component's defaults live beside its options (the supervisor's, the HTTP server's). */
export const defaults = {
  schema: 'public',
  table: 'outbox',
  batchSize: 250,
  batchMaxBytes: 64 * 1024 * 1024,
  concurrency: 32,
  intervalMinMs: 250,
  intervalMaxMs: 2_000,
  handlerTimeoutMs: 30_000,
  maxAttempts: 10,
  retryDelayMs: 1_000,
  retryDelayMaxMs: 3_600_000,
  unmatched: 'process' as UnmatchedPolicy,
  ordering: 'none' as Ordering,
  orderingOnDead: 'continue' as OrderingOnDead,
  txMode: 'event' as TxMode,
  connectTimeoutMs: 30_000,
  discoverIntervalMs: 30_000,
  tenantConcurrency: 1,
  /** Added to the handler timeout when no drain timeout is given. */
  drainMarginMs: 10_000,
} as const

/**
 * Options of a poller. Durations are milliseconds when given as numbers; as strings they are read by
 * `parseDuration` (a bare number is seconds: `'0.25'`, or with a unit: `'250ms'`, `'30s'`).
 */
export interface PollerOptions {
  /**
   * Connection string (`postgres://…`); required. The poller opens its own connections (one for claims,
   * held by each batch transaction — two when batches overlap, see `overlap` —, and one for LISTEN) and closes them on stop. The library never reads env.
   */
  connectionString?: string
  /**
   * Connection string of the connection that LISTENs for wake-ups, when `connectionString` goes through a
   * pooler in transaction mode (LISTEN needs a session of its own): a direct one to the same database.
   * Default: LISTEN on `connectionString`.
   */
  listenUrl?: string
  /** `false`: never LISTEN, only poll; a new event then waits at most `intervalMax`. Default true. */
  listen?: boolean
  /** Schema of the outbox table. Default `public`. */
  schema?: string
  /**
   * Serve every schema whose name matches one of these patterns (`tenant_*`, `admin`; `*` is the only
   * wildcard, `_` is literal), each with its own outbox `table`, from the same connections: one claim
   * connection per `tenantConcurrency` and one LISTEN connection, however many tenants. Excludes `schema`.
   * Default: none (one outbox, `schema`).
   */
  schemas?: string | readonly string[]
  /** With `schemas`: how often new and dropped schemas are looked for (100 ms – 1 d). Default 30 s. */
  discoverInterval?: number | string
  /**
   * With `schemas`: batches of different tenants in flight at once, each on a claim connection of its own
   * (1–100). With 1, a slow handler in one tenant holds the others back for its batch. Default 1.
   */
  tenantConcurrency?: number | string
  /** Name of the outbox table. Default `outbox`. */
  table?: string
  /** Most events claimed per batch (1–10000). Default 250. */
  batchSize?: number | string
  /**
   * Most bytes of payload and metadata claimed per batch, as PostgreSQL stores them (`pg_column_size`, after
   * compression); an event bigger than this is claimed alone. Bytes, or a size with a unit (`64MB`, `512kB`;
   * powers of 1024), 1 kB – 1 TB. Default 64 MB.
   */
  batchMaxBytes?: number | string
  /** Handlers running at once within a batch, or across the tenants' batches of a shared transaction (1–10000). Default 32. */
  concurrency?: number | string
  /** Wait after the first empty poll (1 ms – 1 h). Default 250 ms. */
  intervalMin?: number | string
  /** Longest wait between polls when idle; also bounds the delay of a missed wake-up (1 ms – 1 h). Default 2 s. */
  intervalMax?: number | string
  /** A handler still running after this fails its event (1 ms – 1 h). Default 30 s. */
  handlerTimeout?: number | string
  /** Failed attempts after which an event is dead-lettered (1–1000). Default 10. */
  maxAttempts?: number | string
  /** Delay before the first retry; doubles per attempt, with jitter (1 ms – 30 d). Default 1 s. */
  retryDelay?: number | string
  /** Longest delay between retries (1 ms – 30 d). Default 1 h. */
  retryDelayMax?: number | string
  /** `process`: mark events no handler matches as processed; `hold`: leave them for a replica that has a handler. Default `process`. */
  unmatched?: UnmatchedPolicy | string
  /** `none`; `entity`: per-entity order across replicas; `group`: per-group (and per-entity) order. A property of the outbox: every replica must agree. Default `none`. */
  ordering?: Ordering | string
  /** Under entity or group ordering: `continue` (a dead event does not hold back its entity or group) or `block` (their later events wait for a replay). Default `continue`. */
  orderingOnDead?: OrderingOnDead | string
  /**
   * How handlers share the batch transaction through `ctx.tx()`. `event`: each event's handlers write through a
   * savepoint of their own, taking turns on the batch's connection (a round trip per event). `batch`: the
   * batch's handlers write through one savepoint at the same time, their statements pipelined; when an event
   * that wrote through it fails, the savepoint rolls back whole and the batch's other writing events run again,
   * one savepoint each. Not with `schemas`. Default `event`.
   */
  txMode?: TxMode | string
  /**
   * When every handler is a sink whose batches may overlap (Redis Streams, RabbitMQ; see `registerSinks` and
   * `Sink.overlaps`): claim the next batch while the previous batch's confirms are outstanding, so the database's
   * part of one batch overlaps the broker's part of the other. Two batches
   * in flight at most, each in its own transaction on a claim connection of its own, each committed only once
   * its own confirms are back: a crash rolls both back, and no unconfirmed event is marked processed. Costs a
   * second claim connection. No effect with other handlers (their code never sees two batches at once) or
   * with `schemas`. Default true.
   */
  overlap?: boolean
  /** How long start-up keeps retrying an unreachable database (0 – 1 h). Default 30 s. */
  connectTimeout?: number | string
  /**
   * How long stop() waits for the batch in hand before forcing it, and the statement timeout of every batch
   * transaction (1 ms – 1 d). Default: handler timeout + 10 s. The CLI gives the supervisor the same value:
   * a stopping worker still busy after it is killed.
   */
  drainTimeout?: number | string
  /**
   * Awaited before the handlers of these events may start. The poller announces a batch's events in windows
   * (ahead of the dispatch, so it rarely waits), never starting an event it has not announced; `finished`
   * lists the events whose handlers all ended since the previous call. After a crash, the suspects are the
   * announced events not yet finished: the events of the batch that never started are not charged. A window
   * is `concurrency` events, doubled while the dispatch keeps catching up with it (fast handlers), so at most
   * about `concurrency` + 1.5 windows are suspect. The supervised worker reports them to its supervisor.
   * `lane` is 1 for the events of the second batch in flight when batches overlap (see `overlap`; its
   * `afterBatch` report says `lane: 1` too), so that the settlement of one forgets only its own suspects.
   */
  beforeDispatch?: (ids: string[], finished: string[], lane?: 1) => void | Promise<void>
  /** Called once per claim (empty or not) after it committed or rolled back, with what the batch did: the source of metrics. */
  afterBatch?: (report: BatchReport) => void
  /** Handlers by event-type pattern (`issue.created`, `issue.*`, `*`), or one function for every event. */
  handlers?: HandlerMap
  /** A pino-compatible logger. Default: silent. */
  logger?: Logger
  /** `application_name` of the poller's connections. Default `outbox-poller/<host>/<pid>/worker`. */
  applicationName?: string
}

/** Options after defaults and validation. Durations in milliseconds. */
export interface ResolvedOptions {
  readonly schema: string
  /** The schema patterns served, or undefined for the one outbox of `schema`. */
  readonly schemas: readonly string[] | undefined
  readonly discoverIntervalMs: number
  readonly tenantConcurrency: number
  readonly table: string
  readonly batchSize: number
  readonly batchMaxBytes: number
  readonly concurrency: number
  readonly intervalMinMs: number
  readonly intervalMaxMs: number
  readonly handlerTimeoutMs: number
  readonly maxAttempts: number
  readonly retryDelayMs: number
  readonly retryDelayMaxMs: number
  readonly unmatched: UnmatchedPolicy
  readonly ordering: Ordering
  readonly orderingOnDead: OrderingOnDead
  readonly txMode: TxMode
  readonly connectTimeoutMs: number
  /** LISTEN for wake-ups (the listen URL itself is kept out of here: it may hold a password). */
  readonly listen: boolean
  /** A sink-only poller claims the next batch while the previous one's confirms are outstanding. */
  readonly overlap: boolean
  readonly drainTimeoutMs: number
  /** Derived, set with SET LOCAL in every batch transaction: the drain timeout, so no statement outlives a drain. */
  readonly statementTimeoutMs: number
  /**
   * Derived, set with SET LOCAL in every batch transaction: the longest a batch can sit idle while its handlers
   * run (batch ÷ concurrency, rounded up, × handler timeout) plus 10 s; 0 (off) past PostgreSQL's maximum.
   */
  readonly idleInTransactionTimeoutMs: number
}

/** How an option is named in error messages: the CLI passes `--batch-size` or `OUTBOX_POLLER_BATCH_SIZE`. */
export type OptionNamer<Key extends string = keyof PollerOptions> = (key: Key) => string

/** Every key createPoller takes: any other is a mistake (an option of another component, a typo), refused. */
const pollerOptionKeys = {
  connectionString: true, listenUrl: true, listen: true, schema: true, schemas: true, discoverInterval: true, tenantConcurrency: true, table: true, batchSize: true, batchMaxBytes: true, concurrency: true,
  intervalMin: true, intervalMax: true, handlerTimeout: true, maxAttempts: true, retryDelay: true,
  retryDelayMax: true, unmatched: true, ordering: true, orderingOnDead: true, txMode: true, overlap: true, connectTimeout: true,
  drainTimeout: true, beforeDispatch: true, afterBatch: true, handlers: true, logger: true, applicationName: true,
} as const satisfies Record<keyof PollerOptions, true>

export const HOUR = 3_600_000
export const DAY = 24 * HOUR
/** The largest value PostgreSQL accepts for its timeout settings (INT_MAX ms, about 24.8 days). */
const POSTGRES_MAX_TIMEOUT_MS = 2_147_483_647

/** Applies defaults, validates every value and returns a frozen object. Errors name the option, the range and the value. */
export function resolveOptions(input: PollerOptions, nameOf: OptionNamer = (key) => key): ResolvedOptions {
  rejectUnknownOptions(input, pollerOptionKeys, 'poller')
  const int = (key: keyof PollerOptions, fallback: number, min: number, max: number) =>
    integerOption(input[key] as number | string | undefined, nameOf(key), fallback, min, max)
  const ms = (key: keyof PollerOptions, fallback: number, min: number, max: number) =>
    durationOption(input[key] as number | string | undefined, nameOf(key), fallback, min, max)

  const resolved: { -readonly [K in keyof ResolvedOptions]: ResolvedOptions[K] } = {
    schema: identifierOption(input.schema, nameOf('schema'), defaults.schema),
    schemas: input.schemas === undefined ? undefined : parseSchemaPatterns(input.schemas, nameOf('schemas')),
    discoverIntervalMs: ms('discoverInterval', defaults.discoverIntervalMs, 100, DAY),
    tenantConcurrency: int('tenantConcurrency', defaults.tenantConcurrency, 1, 100),
    table: identifierOption(input.table, nameOf('table'), defaults.table),
    batchSize: int('batchSize', defaults.batchSize, 1, 10_000),
    batchMaxBytes: bytesOption(input.batchMaxBytes, nameOf('batchMaxBytes'), defaults.batchMaxBytes, 1024, 1024 ** 4),
    concurrency: int('concurrency', defaults.concurrency, 1, 10_000),
    intervalMinMs: ms('intervalMin', defaults.intervalMinMs, 1, HOUR),
    intervalMaxMs: ms('intervalMax', defaults.intervalMaxMs, 1, HOUR),
    handlerTimeoutMs: ms('handlerTimeout', defaults.handlerTimeoutMs, 1, HOUR),
    maxAttempts: int('maxAttempts', defaults.maxAttempts, 1, 1000),
    retryDelayMs: ms('retryDelay', defaults.retryDelayMs, 1, 30 * DAY),
    retryDelayMaxMs: ms('retryDelayMax', defaults.retryDelayMaxMs, 1, 30 * DAY),
    unmatched: choiceOption(input.unmatched, nameOf('unmatched'), defaults.unmatched, ['process', 'hold'] as const),
    ordering: choiceOption(input.ordering, nameOf('ordering'), defaults.ordering, ['none', 'entity', 'group'] as const),
    orderingOnDead: choiceOption(input.orderingOnDead, nameOf('orderingOnDead'), defaults.orderingOnDead, ['continue', 'block'] as const),
    txMode: choiceOption(input.txMode, nameOf('txMode'), defaults.txMode, ['event', 'batch'] as const),
    connectTimeoutMs: ms('connectTimeout', defaults.connectTimeoutMs, 0, HOUR),
    listen: booleanOption(input.listen, nameOf('listen'), true),
    overlap: booleanOption(input.overlap, nameOf('overlap'), true),
    drainTimeoutMs: 0,
    statementTimeoutMs: 0,
    idleInTransactionTimeoutMs: 0,
  }
  if (input.listenUrl !== undefined) checkDatabaseUrl(input.listenUrl, nameOf('listenUrl'))
  resolved.drainTimeoutMs = ms('drainTimeout', resolved.handlerTimeoutMs + defaults.drainMarginMs, 1, DAY)
  resolved.statementTimeoutMs = resolved.drainTimeoutMs
  const idleMs = Math.ceil(resolved.batchSize / resolved.concurrency) * resolved.handlerTimeoutMs + defaults.drainMarginMs
  resolved.idleInTransactionTimeoutMs = idleMs > POSTGRES_MAX_TIMEOUT_MS ? 0 : idleMs
  if (resolved.schemas !== undefined && input.schema !== undefined) {
    throw new ConfigError(`${nameOf('schema')} and ${nameOf('schemas')} exclude each other: one outbox, or every outbox of the matching schemas`)
  }
  if (resolved.schemas !== undefined && resolved.txMode === 'batch') {
    throw new ConfigError(`${nameOf('txMode')} batch is not available with ${nameOf('schemas')}: each tenant's batches run in event mode`)
  }
  if (resolved.intervalMinMs > resolved.intervalMaxMs) {
    throw new ConfigError(`${nameOf('intervalMin')} (${resolved.intervalMinMs} ms) must not exceed ${nameOf('intervalMax')} (${resolved.intervalMaxMs} ms)`)
  }
  if (resolved.retryDelayMs > resolved.retryDelayMaxMs) {
    throw new ConfigError(`${nameOf('retryDelay')} (${resolved.retryDelayMs} ms) must not exceed ${nameOf('retryDelayMax')} (${resolved.retryDelayMaxMs} ms)`)
  }
  return Object.freeze(resolved)
}

/** A key that is not one of `known` is a ConfigError naming it: a silently ignored option is a silent misconfiguration. */
export function rejectUnknownOptions(input: object, known: Readonly<Record<string, true>>, component: string): void {
  for (const key of Object.keys(input)) {
    if (!Object.hasOwn(known, key)) throw new ConfigError(`unknown ${component} option ${JSON.stringify(key)} (known: ${Object.keys(known).join(', ')})`)
  }
}

export function integerOption(value: number | string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback
  const number = typeof value === 'number' ? value : /^\s*-?\d+\s*$/.test(value) ? Number(value) : Number.NaN
  if (!Number.isInteger(number) || number < min || number > max) {
    throw new ConfigError(`${name} must be an integer between ${min} and ${max} (got ${JSON.stringify(value)})`)
  }
  return number
}

export function durationOption(value: number | string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback
  const ms = typeof value === 'number' ? value : parseDuration(value, name)
  if (!Number.isFinite(ms) || ms < min || ms > max) {
    throw new ConfigError(`${name} must be between ${min} ms and ${max} ms (got ${JSON.stringify(value)})`)
  }
  return ms
}

export function bytesOption(value: number | string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback
  const bytes = typeof value === 'number' ? value : parseByteSize(value, name)
  if (!Number.isInteger(bytes) || bytes < min || bytes > max) {
    throw new ConfigError(`${name} must be between ${min} and ${max} bytes (got ${JSON.stringify(value)})`)
  }
  return bytes
}

export function booleanOption(value: boolean | undefined, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw new ConfigError(`${name} must be true or false (got ${JSON.stringify(value)})`)
  return value
}

export function choiceOption<T extends string>(value: string | undefined, name: string, fallback: T, choices: readonly T[]): T {
  if (value === undefined) return fallback
  if (!(choices as readonly string[]).includes(value)) {
    throw new ConfigError(`${name} must be one of ${choices.join(', ')} (got ${JSON.stringify(value)})`)
  }
  return value as T
}

/** Schema and table names are quoted wherever they are used; here we only refuse what PostgreSQL itself cannot name. */
export function identifierOption(value: string | undefined, name: string, fallback: string): string {
  if (value === undefined) return fallback
  if (value.length === 0 || Buffer.byteLength(value) > 63 || value.includes('\0')) {
    throw new ConfigError(`${name} must be a name of 1 to 63 bytes (got ${JSON.stringify(value)})`)
  }
  return value
}
