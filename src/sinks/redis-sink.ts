import { createClient } from '@redis/client'
import { errorMessage } from '../errors.js'
import type { OutboxEvent } from '../types.js'
import { type BrokerDriver, BrokerSink } from './broker-sink.js'
import { eventMessageFields, eventTraceparent } from './event-message.js'
import type { RedisSinkSpec } from './parse-sink.js'
import type { ResolvedSinkOptions, Sink } from './sink.js'
import { sinkErrorMessage, sinkMisconfigured, sinkUnavailable } from './sink-errors.js'
import { routeFor } from './tenant-route.js'

type RedisClient = ReturnType<typeof newClient>

interface RedisLink {
  client: RedisClient
  sha: string
  /** The script being loaded again after NOSCRIPT, shared by the batch's publishes that all met it. */
  reloading?: Promise<string>
}

/**
 * Adds a batch's events to the stream in one script call, each unless its id was seen, so a re-delivery
 * after a crash between publish and commit is dropped atomically. The id is remembered (SET NX) before its
 * XADD and forgotten again if the XADD fails, in the same script: nothing else runs in between, so no
 * failed event is ever taken for a duplicate. Each command runs under pcall, so an error fails only its own
 * event. Returns one string per event: `+<entry id>` added, `=` a duplicate, `!<error>` an error reply.
 * KEYS: stream, then one dedupe key per event. ARGV: ttl seconds, maxlen ('' for none), then per event the
 * values of the fields below, metadata and traceparent '' when the event has none.
 */
const relayScript = `
local ttl, maxlen = ARGV[1], ARGV[2]
local names = {'event_id', 'event_type', 'entity_type', 'entity_id', 'created_at', 'payload', 'metadata', 'traceparent'}
local command = {'XADD', KEYS[1]}
if maxlen ~= '' then command = {'XADD', KEYS[1], 'MAXLEN', '~', maxlen} end
command[#command + 1] = '*'
local head = #command
local results = {}
for i = 2, #KEYS do
  local at = 2 + (i - 2) * 8
  local fresh = redis.pcall('SET', KEYS[i], '1', 'NX', 'EX', ttl)
  if type(fresh) == 'table' and fresh.err then
    results[i - 1] = '!' .. fresh.err
  elseif not fresh then
    results[i - 1] = '='
  else
    local length = head
    for f = 1, 8 do
      local value = ARGV[at + f]
      if f < 7 or value ~= '' then
        command[length + 1] = names[f]
        command[length + 2] = value
        length = length + 2
      end
    end
    local id = redis.pcall(unpack(command, 1, length))
    if type(id) == 'table' and id.err then
      redis.pcall('DEL', KEYS[i])
      results[i - 1] = '!' .. id.err
    else
      results[i - 1] = '+' .. id
    end
  end
end
return results
`

/** Error replies that mean the server cannot take writes now (loading, failing over, out of memory): not the event's fault. */
const transientReplies = /^(BUSY|LOADING|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN|OOM)\b/

/**
 * Redis Streams through node-redis: a batch is one script call, one round trip. Fields: event_id, event_type, entity_type, entity_id, created_at,
 * payload (its JSON text as stored), metadata (JSON, when the event has it) and traceparent (when there is one, see eventTraceparent). Offline queueing and the
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
    overlaps: true,
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
      // one script call per stream: a batch is one tenant's, so with {schema} in the stream, still one call
      const byStream = new Map<string, OutboxEvent[]>()
      for (const event of events) {
        const stream = routeFor(spec.stream, event.schema)
        const group = byStream.get(stream)
        if (group === undefined) byStream.set(stream, [event])
        else group.push(event)
      }
      const sent = new Map<OutboxEvent, Promise<void>>()
      for (const [stream, group] of byStream) {
        const keys = [stream]
        const args = [String(spec.dedupeTtlSeconds), spec.maxlen === undefined ? '' : String(spec.maxlen)]
        for (const event of group) {
          keys.push(redisDedupeKey(stream, event.event_id))
          appendStreamFields(args, event)
        }
        const call = evalRelay(link, { keys, arguments: args })
        group.forEach((event, i) =>
          sent.set(
            event,
            call.then((replies) => {
              const reply = replies[i]
              if (typeof reply !== 'string' || reply.startsWith('!')) throw replyError(typeof reply === 'string' ? reply.slice(1) : `unexpected script reply ${JSON.stringify(reply)}`)
            }),
          ),
        )
      }
      return events.map((event) => sent.get(event)!)
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

/** Appends the event's field values to the script's arguments, in the script's order. */
function appendStreamFields(args: string[], event: OutboxEvent): void {
  const message = eventMessageFields(event)
  const metadata = message.metadata === undefined ? '' : JSON.stringify(message.metadata)
  args.push(message.event_id, message.event_type, message.entity_type, message.entity_id, message.created_at, event.payloadText, metadata, eventTraceparent(event) ?? '')
}
