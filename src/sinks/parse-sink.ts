import { parseDuration } from '../duration.js'
import { ConfigError, errorMessage } from '../errors.js'
import { parseEventTypePattern } from '../poller/event-type-pattern.js'

/** Fields every sink spec has. */
interface SinkSpecBase {
  /** Event-type pattern as for handlers (`issue.created`, `issue.*`, `*`). Default `*`. */
  readonly pattern: string
  /** The URL with its password (and anything else secret) masked: the sink's name in every message and log. */
  readonly name: string
  /** Secret strings of the URL (password, token), scrubbed from any error message that might echo them. */
  readonly secrets: readonly string[]
}

/** RabbitMQ: `amqp[s]://user:pass@host:5672/vhost?exchange=outbox[&declare=topic]`. */
export interface AmqpSinkSpec extends SinkSpecBase {
  readonly kind: 'amqp'
  /** The URL amqplib connects to: ours without the sink's own parameters (amqplib reads `heartbeat`, `frameMax`, …). */
  readonly connectUrl: string
  readonly exchange: string
  /** Exchange type to declare (durable) at connect; without it the exchange must exist. */
  readonly declare: string | undefined
}

/** NATS JetStream: `nats://[user:pass@]host:4222?stream=OUTBOX[&subject=outbox][&create=1][&duplicate_window=2m]`. */
export interface NatsSinkSpec extends SinkSpecBase {
  readonly kind: 'nats'
  readonly server: string
  readonly user: string | undefined
  readonly pass: string | undefined
  /** A user without a password is a token, as in `nats://TOKEN@host`. */
  readonly token: string | undefined
  readonly stream: string
  /** Events go to `<subject>.<event_type>`. Default `outbox`. */
  readonly subject: string
  /** Create the stream (subjects `<subject>.>`) if it does not exist. */
  readonly create: boolean
  /** The created stream's duplicate window, in ms; the server's default (2 minutes) when absent. */
  readonly duplicateWindowMs: number | undefined
}

/** Redis Streams: `redis[s]://[user:pass@]host:6379[/db]?stream=outbox[&maxlen=100000][&dedupe_ttl=24h]`. */
export interface RedisSinkSpec extends SinkSpecBase {
  readonly kind: 'redis'
  /** The URL node-redis connects to: ours without the sink's own parameters. */
  readonly connectUrl: string
  readonly stream: string
  /** `XADD … MAXLEN ~ n`: trims the stream approximately. */
  readonly maxlen: number | undefined
  /** How long an event id is remembered to drop a re-delivery, in seconds. Default 24 h. */
  readonly dedupeTtlSeconds: number
}

/** Webhooks: `http[s]://host/path?query`; the whole URL, query included, is the endpoint. */
export interface WebhookSinkSpec extends SinkSpecBase {
  readonly kind: 'webhook'
  readonly url: string
}

export type SinkSpec = AmqpSinkSpec | NatsSinkSpec | RedisSinkSpec | WebhookSinkSpec

/** Default of `dedupe_ttl` for Redis sinks: long enough for any retry of a crash between publish and commit. */
export const defaultRedisDedupeTtlSeconds = 86_400

/** Query parameters amqplib reads itself; they are passed through to it. */
const amqplibParameters = ['heartbeat', 'frameMax', 'channelMax', 'locale', 'maxFrameSize']

const schemeAtStart = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//

/**
 * Reads a `--sink [pattern=]URL` spec. A `pattern=` prefix is recognised only when the text does not already
 * start with a URL scheme, and what follows the first `=` must: so a `=` inside a URL's query is never taken
 * for one. Every mistake is a ConfigError naming the spec (credentials masked) and `source`.
 */
export function parseSink(text: string, source = '--sink'): SinkSpec {
  const spec = text.trim()
  let pattern = '*'
  let url = spec
  if (!schemeAtStart.test(spec)) {
    const equals = spec.indexOf('=')
    if (equals > 0 && schemeAtStart.test(spec.slice(equals + 1))) {
      pattern = spec.slice(0, equals)
      url = spec.slice(equals + 1)
    }
  }
  const fail = (why: string): never => {
    throw new ConfigError(`${source} ${JSON.stringify(redactUrl(spec))}: ${why}`)
  }
  if (!schemeAtStart.test(url)) fail('must be [pattern=]URL with an amqp://, amqps://, nats://, redis://, rediss://, http:// or https:// URL')
  parseEventTypePattern(pattern, `${source} ${JSON.stringify(redactUrl(spec))}: the pattern`)
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return fail('is not a valid URL')
  }
  if (parsed.hostname === '') fail('the URL has no host')
  const base = { pattern, name: redactUrl(url), secrets: secretsOf(parsed) }
  switch (parsed.protocol) {
    case 'amqp:':
    case 'amqps:':
      return amqpSpec(parsed, base, fail)
    case 'nats:':
      return natsSpec(parsed, base, fail)
    case 'redis:':
    case 'rediss:':
      return redisSpec(parsed, base, fail)
    case 'http:':
    case 'https:':
      return { kind: 'webhook', url: parsed.toString(), ...base }
    default:
      return fail(`unknown scheme ${JSON.stringify(parsed.protocol.slice(0, -1))} (amqp, amqps, nats, redis, rediss, http, https)`)
  }
}

/** Reads `OUTBOX_POLLER_SINKS`: one sink per line, or separated by spaces (a URL never contains one). */
export function parseSinkList(value: string | undefined, source = 'OUTBOX_POLLER_SINKS'): SinkSpec[] {
  if (value === undefined) return []
  return value
    .split(/\s+/)
    .filter((item) => item !== '')
    .map((item) => parseSink(item, source))
}

type Fail = (why: string) => never
type Base = Pick<SinkSpecBase, 'pattern' | 'name' | 'secrets'>

function amqpSpec(url: URL, base: Base, fail: Fail): AmqpSinkSpec {
  const params = takeParameters(url, ['exchange', 'declare'], amqplibParameters, fail)
  const exchange = params.get('exchange')
  if (!exchange) fail('needs ?exchange=<name> (the exchange events are published to)')
  const declare = params.get('declare')
  if (declare !== undefined && !/^[A-Za-z0-9._-]+$/.test(declare)) fail(`?declare must be an exchange type such as topic, direct, fanout or headers (got ${JSON.stringify(declare)})`)
  return { kind: 'amqp', connectUrl: url.toString(), exchange: exchange!, declare: declare || undefined, ...base }
}

function natsSpec(url: URL, base: Base, fail: Fail): NatsSinkSpec {
  const params = takeParameters(url, ['stream', 'subject', 'create', 'duplicate_window'], [], fail)
  const stream = params.get('stream')
  if (!stream) fail('needs ?stream=<name> (the JetStream stream that stores the events)')
  if (!/^[^\s.*>/\\]+$/.test(stream!)) fail(`?stream must be a stream name without spaces, '.', '*', '>' or slashes (got ${JSON.stringify(stream)})`)
  const subject = params.get('subject') ?? 'outbox'
  if (!/^[^\s*>]+$/.test(subject) || subject.startsWith('.') || subject.endsWith('.') || subject.includes('..')) {
    fail(`?subject must be a subject prefix without spaces or wildcards (got ${JSON.stringify(subject)})`)
  }
  const create = params.get('create')
  if (create !== undefined && !['1', 'true', '0', 'false'].includes(create)) fail(`?create must be 1 or 0 (got ${JSON.stringify(create)})`)
  const window = params.get('duplicate_window')
  const duplicateWindowMs = window === undefined ? undefined : durationParameter(window, '?duplicate_window', fail)
  if (window !== undefined && create !== '1' && create !== 'true') fail('?duplicate_window applies to a stream the sink creates: add ?create=1, or set it on the stream')
  const user = url.username === '' ? undefined : decodeURIComponent(url.username)
  const pass = url.password === '' ? undefined : decodeURIComponent(url.password)
  return {
    kind: 'nats',
    server: url.port === '' ? `${url.hostname}:4222` : url.host,
    user: pass === undefined ? undefined : user,
    pass,
    token: pass === undefined ? user : undefined,
    stream: stream!,
    subject,
    create: create === '1' || create === 'true',
    duplicateWindowMs,
    ...base,
  }
}

function redisSpec(url: URL, base: Base, fail: Fail): RedisSinkSpec {
  const params = takeParameters(url, ['stream', 'maxlen', 'dedupe_ttl'], [], fail)
  const stream = params.get('stream')
  if (!stream) fail('needs ?stream=<key> (the stream events are added to)')
  const maxlenText = params.get('maxlen')
  const maxlen = maxlenText === undefined ? undefined : Number(maxlenText)
  if (maxlen !== undefined && (!/^\d+$/.test(maxlenText!) || maxlen < 1)) fail(`?maxlen must be a positive integer (got ${JSON.stringify(maxlenText)})`)
  const ttl = params.get('dedupe_ttl')
  const dedupeTtlSeconds = ttl === undefined ? defaultRedisDedupeTtlSeconds : Math.ceil(durationParameter(ttl, '?dedupe_ttl', fail) / 1000)
  if (dedupeTtlSeconds < 1) fail(`?dedupe_ttl must be at least 1s (got ${JSON.stringify(ttl)})`)
  return { kind: 'redis', connectUrl: url.toString(), stream: stream!, maxlen, dedupeTtlSeconds, ...base }
}

function durationParameter(text: string, label: string, fail: Fail): number {
  try {
    return parseDuration(text, label)
  } catch (error) {
    return fail(errorMessage(error))
  }
}

/**
 * Removes the sink's own parameters from the URL and returns them. Parameters the client library reads are
 * left in place; any other name is a mistake (a typo must not silently publish somewhere else).
 */
function takeParameters(url: URL, own: string[], passThrough: string[], fail: Fail): Map<string, string> {
  const taken = new Map<string, string>()
  for (const [key, value] of url.searchParams) {
    if (own.includes(key)) taken.set(key, value)
    else if (!passThrough.includes(key)) fail(`unknown parameter ${JSON.stringify(key)} (known: ${[...own, ...passThrough].join(', ')})`)
  }
  for (const key of own) url.searchParams.delete(key)
  return taken
}

/** Query parameters of a webhook URL whose values are masked in names and logs. */
const secretParameter = /token|secret|key|sig|pass|auth|code|credential/i

/**
 * The URL with its secrets masked: the password (`amqp://guest:***@host`), a NATS token
 * (`nats://***@host`), and the values of query parameters that look like credentials (`?token=***`).
 * Never throws: text that is not a URL has anything between `//` and `@` masked.
 */
export function redactUrl(url: string): string {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return url.replace(/\/\/[^/@\s]*@/, '//***@')
  }
  if (parsed.password !== '') parsed.password = '***'
  else if (parsed.username !== '' && parsed.protocol === 'nats:') parsed.username = '***'
  for (const [key] of parsed.searchParams) {
    if (secretParameter.test(key)) parsed.searchParams.set(key, '***')
  }
  // URLSearchParams re-encodes `*`; keep the mask readable.
  return parsed.toString().replace(/%2A%2A%2A/g, '***')
}

function secretsOf(url: URL): string[] {
  const secrets = [url.password, url.protocol === 'nats:' && url.password === '' ? url.username : '']
  for (const [key, value] of url.searchParams) if (secretParameter.test(key)) secrets.push(value)
  return secrets.filter((secret) => secret.length >= 3).flatMap((secret) => [secret, safeDecode(secret)])
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}
