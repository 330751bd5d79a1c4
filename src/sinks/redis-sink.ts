import { createClient } from 'redis'
import { errorMessage } from '../errors.js'
import type { OutboxEvent } from '../types.js'
import { type BrokerDriver, BrokerSink } from './broker-sink.js'
import { eventMessageFields } from './event-message.js'
import type { RedisSinkSpec } from './parse-sink.js'
import type { ResolvedSinkOptions, Sink } from './sink.js'
import { sinkErrorMessage, sinkMisconfigured, sinkUnavailable } from './sink-errors.js'

type RedisClient = ReturnType<typeof newClient>

interface RedisLink {
  client: RedisClient
  sha: string
  /** The script being loaded again after NOSCRIPT, shared by the batch's publishes that all met it. */
  reloading?: Promise<string>
}

/**
 * Adds a batch's events to the stream in one script call, each unless its id was seen, so a re-delivery
 * after a crash between publish and commit is dropped atomically. An id is checked first and remembered
 * after its XADD: a script is not rolled back when a command fails, so remembering first could hide an
 * event whose XADD failed. Each command runs under pcall, so an error fails only its own event. Returns one
 * string per event: `+<entry id>` added, `=<first entry id>` a duplicate, `!<error>` an error reply.
 * KEYS: stream, then one dedupe key per event. ARGV: ttl seconds, maxlen ('' for none), then per event its
 * number of field and value strings, followed by them.
 */
const relayScript = `
local ttl, maxlen = ARGV[1], ARGV[2]
local results = {}
local at = 3
for i = 2, #KEYS do
  local count = tonumber(ARGV[at])
  local fields = {unpack(ARGV, at + 1, at + count)}
  at = at + count + 1
  local seen = redis.pcall('GET', KEYS[i])
  if type(seen) == 'table' and seen.err then
    results[i - 1] = '!' .. seen.err
  elseif seen then
    results[i - 1] = '=' .. seen
  else
    local id
    if maxlen ~= '' then
      id = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(fields))
    else
      id = redis.pcall('XADD', KEYS[1], '*', unpack(fields))
    end
    if type(id) == 'table' and id.err then
      results[i - 1] = '!' .. id.err
    else
      local remembered = redis.pcall('SET', KEYS[i], id, 'EX', ttl)
      results[i - 1] = (type(remembered) == 'table' and remembered.err) and ('!' .. remembered.err) or ('+' .. id)
    end
  end
end
return results
`

/** Error replies that mean the server cannot take writes now (loading, failing over, out of memory): not the event's fault. */
const transientReplies = /^(BUSY|LOADING|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN|OOM)\b/

/**
 * Redis Streams through node-redis: a batch is one script call, one round trip. Fields: event_id, event_type, entity_type, entity_id, created_at,
 * payload (its JSON text as stored) and metadata (JSON, when the event has it). Offline queueing and the
 * client's reconnect are off: the sink replaces a lost connection itself and fails fast in between.
 */
export function createRedisSink(spec: RedisSinkSpec, options: ResolvedSinkOptions): Sink {
  return new BrokerSink(spec, redisDriver(spec, options.timeoutMs), options)
}

/** The key that remembers an event id for `dedupe_ttl`. */
export function redisDedupeKey(stream: string, eventId: string): string {
  return `outbox-poller:dedupe:${stream}:${eventId}`
}

function redisDriver(spec: RedisSinkSpec, timeoutMs: number): BrokerDriver<RedisLink> {
  const load = async (client: RedisClient) => String(await client.scriptLoad(relayScript))
  /** One script call; a lost script cache (restart, SCRIPT FLUSH) is loaded again once and the call repeated. */
  const evalRelay = async (link: RedisLink, args: { keys: string[]; arguments: string[] }): Promise<unknown[]> => {
    try {
      return (await link.client.evalSha(link.sha, args)) as unknown[]
    } catch (error) {
      if (!errorMessage(error).startsWith('NOSCRIPT')) throw replyError(error)
      link.sha = await (link.reloading ??= load(link.client).finally(() => (link.reloading = undefined)))
      return (await link.client.evalSha(link.sha, args)) as unknown[]
    }
  }
  /** An error reply: transient ones mean the server cannot take writes now, not that the event is at fault. */
  const replyError = (error: unknown): unknown => {
    const message = errorMessage(error)
    return transientReplies.test(message) ? sinkUnavailable(spec.name, sinkErrorMessage(error, spec.secrets)) : typeof error === 'string' ? new Error(error) : error
  }
  return {
    async open(lost) {
      const client = newClient(spec.connectUrl, timeoutMs)
      client.on('error', (error: unknown) => lost(sinkErrorMessage(error, spec.secrets)))
      client.on('end', () => lost('connection closed'))
      try {
        await client.connect()
        return { client, sha: await load(client) }
      } catch (error) {
        client.destroy()
        if (/^(WRONGPASS|NOAUTH|NOPERM)\b/.test(errorMessage(error))) throw sinkMisconfigured(spec.name, sinkErrorMessage(error, spec.secrets))
        throw error
      }
    },

    async close(link) {
      await link.client.close()
    },

    sendBatch(link, events) {
      const keys = [spec.stream]
      const args = [String(spec.dedupeTtlSeconds), spec.maxlen === undefined ? '' : String(spec.maxlen)]
      for (const event of events) {
        keys.push(redisDedupeKey(spec.stream, event.event_id))
        appendStreamFields(args, event)
      }
      const call = evalRelay(link, { keys, arguments: args })
      return events.map((_event, i) =>
        call.then((replies) => {
          const reply = replies[i]
          if (typeof reply !== 'string' || reply.startsWith('!')) throw replyError(typeof reply === 'string' ? reply.slice(1) : `unexpected script reply ${JSON.stringify(reply)}`)
        }),
      )
    },

    isConnectionFailure(error) {
      return ['ClientClosedError', 'ClientOfflineError', 'DisconnectsClientError', 'SocketClosedUnexpectedlyError', 'SocketTimeoutError', 'ConnectionTimeoutError'].includes(
        (error as Error | undefined)?.constructor?.name ?? '',
      )
    },
  }
}

function newClient(url: string, timeoutMs: number) {
  return createClient({ url, name: 'outbox-poller', disableOfflineQueue: true, socket: { reconnectStrategy: false, connectTimeout: timeoutMs } })
}

/** Appends the event's field count, then its fields and values, to the script's arguments. */
function appendStreamFields(args: string[], event: OutboxEvent): void {
  const message = eventMessageFields(event)
  const withMetadata = message.metadata !== undefined
  args.push(
    withMetadata ? '14' : '12',
    'event_id', message.event_id,
    'event_type', message.event_type,
    'entity_type', message.entity_type,
    'entity_id', message.entity_id,
    'created_at', message.created_at,
    'payload', event.payloadText,
  )
  if (withMetadata) args.push('metadata', JSON.stringify(message.metadata))
}
