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
 * Adds the event to the stream unless its id was seen, in one script, so a re-delivery after a crash
 * between publish and commit is dropped atomically. The id is checked first and remembered after the
 * XADD: a script is not rolled back when a command fails, so remembering first could hide an event whose
 * XADD failed. Returns {1, entry id} for an added event, {0, first entry id} for a duplicate.
 * KEYS: stream, dedupe key. ARGV: ttl seconds, maxlen ('' for none), then field, value, ….
 */
const relayScript = `
local seen = redis.call('GET', KEYS[2])
if seen then return {0, seen} end
local id
if ARGV[2] ~= '' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
else
  id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
end
redis.call('SET', KEYS[2], id, 'EX', ARGV[1])
return {1, id}
`

/** Error replies that mean the server cannot take writes now (loading, failing over, out of memory): not the event's fault. */
const transientReplies = /^(BUSY|LOADING|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN|OOM)\b/

/**
 * Redis Streams through node-redis. A batch's script calls are issued in one go, and node-redis writes the
 * commands of one tick together: one round trip per batch, one reply per event. Fields: event_id, event_type, entity_type, entity_id, created_at,
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

    async send(link, event) {
      const args = { keys: [spec.stream, redisDedupeKey(spec.stream, event.event_id)], arguments: [String(spec.dedupeTtlSeconds), spec.maxlen === undefined ? '' : String(spec.maxlen), ...streamFields(event)] }
      try {
        await link.client.evalSha(link.sha, args)
      } catch (error) {
        const message = errorMessage(error)
        if (message.startsWith('NOSCRIPT')) {
          // the server lost its script cache (restart, SCRIPT FLUSH)
          link.sha = await (link.reloading ??= load(link.client).finally(() => (link.reloading = undefined)))
          await link.client.evalSha(link.sha, args)
          return
        }
        if (transientReplies.test(message)) throw sinkUnavailable(spec.name, sinkErrorMessage(error, spec.secrets))
        throw error
      }
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

function streamFields(event: OutboxEvent): string[] {
  const message = eventMessageFields(event)
  const fields = [
    'event_id', message.event_id,
    'event_type', message.event_type,
    'entity_type', message.entity_type,
    'entity_id', message.entity_id,
    'created_at', message.created_at,
    'payload', event.payloadText,
  ]
  if (message.metadata !== undefined) fields.push('metadata', JSON.stringify(message.metadata))
  return fields
}
