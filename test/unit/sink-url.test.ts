import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import { defaultRedisDedupeTtlSeconds, parseSink, parseSinkList, redactUrl } from '../../src/sinks/parse-sink.js'

/** The message of the ConfigError `parseSink` throws for `spec`. */
function mistake(spec: string, source?: string): string {
  try {
    parseSink(spec, source)
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    return (error as Error).message
  }
  throw new Error(`${spec} was accepted`)
}

describe('sink URLs', () => {
  it('a pattern= prefix is read only before the scheme, so = in a query is never one', () => {
    expect(parseSink('billing.*=https://hooks.test/x?a=b')).toMatchObject({ kind: 'webhook', pattern: 'billing.*', url: 'https://hooks.test/x?a=b' })
    expect(parseSink('https://hooks.test/x?pattern=billing.*=x')).toMatchObject({ pattern: '*', url: 'https://hooks.test/x?pattern=billing.*=x' })
    expect(parseSink('  issue.*=https://hooks.test/x  ')).toMatchObject({ pattern: 'issue.*' })
  })

  it('RabbitMQ: the exchange and declare are the sink\'s own, amqplib\'s parameters stay in the URL it connects to', () => {
    expect(parseSink('amqp://guest:guest@127.0.0.1:5672/?exchange=outbox&declare=topic')).toMatchObject({
      kind: 'amqp',
      pattern: '*',
      exchange: 'outbox',
      declare: 'topic',
      connectUrl: 'amqp://guest:guest@127.0.0.1:5672/',
      name: 'amqp://guest:***@127.0.0.1:5672/?exchange=outbox&declare=topic',
      secrets: ['guest', 'guest'],
    })
    expect(parseSink('amqps://u:p@h/vh?exchange=x&heartbeat=30')).toMatchObject({ connectUrl: 'amqps://u:p@h/vh?heartbeat=30', declare: undefined })
    expect(mistake('amqp://h/?exchange=x&declare=top%20ic')).toMatch(/\?declare must be an exchange type/)
  })

  it('NATS: the default port and subject; a user without a password is a token; the duplicate window needs create=1', () => {
    expect(parseSink('issue.created=nats://tok123@127.0.0.1?stream=OUTBOX')).toMatchObject({
      kind: 'nats',
      pattern: 'issue.created',
      server: '127.0.0.1:4222',
      token: 'tok123',
      user: undefined,
      pass: undefined,
      subject: 'outbox',
      create: false,
      duplicateWindowMs: undefined,
      name: 'nats://***@127.0.0.1?stream=OUTBOX',
    })
    expect(parseSink('nats://u:p@n:4223?stream=S&subject=app.events&create=1&duplicate_window=1h')).toMatchObject({ server: 'n:4223', user: 'u', pass: 'p', token: undefined, subject: 'app.events', create: true, duplicateWindowMs: 3_600_000 })
    expect(mistake('nats://n?stream=S&duplicate_window=1h')).toMatch(/\?duplicate_window applies to a stream the sink creates/)
    expect(mistake('nats://n?stream=a.b')).toMatch(/\?stream must be a stream name/)
    expect(mistake('nats://n?stream=S&subject=a..b')).toMatch(/\?subject must be a subject prefix/)
    expect(mistake('nats://n?stream=S&create=yes')).toMatch(/\?create must be 1 or 0/)
  })

  it('Redis: maxlen and dedupe_ttl, a day by default', () => {
    expect(parseSink('redis://:pw@127.0.0.1:6379/2?stream=events&maxlen=1000&dedupe_ttl=1h')).toMatchObject({ kind: 'redis', stream: 'events', maxlen: 1000, dedupeTtlSeconds: 3600, connectUrl: 'redis://:pw@127.0.0.1:6379/2' })
    expect(parseSink('rediss://h?stream=s')).toMatchObject({ maxlen: undefined, dedupeTtlSeconds: defaultRedisDedupeTtlSeconds })
    expect(parseSink('redis://h?stream=s&dedupe_ttl=10ms').dedupeTtlSeconds).toBe(1) // whole seconds, rounded up
    expect(mistake('redis://h?stream=s&dedupe_ttl=0s')).toMatch(/\?dedupe_ttl must be at least 1s/)
    expect(mistake('redis://h?stream=s&dedupe_ttl=soon')).toMatch(/^--sink "redis:\/\/h\?stream=s&dedupe_ttl=soon": /)
  })

  it('OUTBOX_POLLER_SINKS takes one sink per line or separated by spaces, and names itself in mistakes', () => {
    const specs = parseSinkList('amqp://h/?exchange=a\n  item.*=https://x.test/h   redis://h?stream=s\n')
    expect(specs.map((spec) => [spec.kind, spec.pattern])).toEqual([['amqp', '*'], ['webhook', 'item.*'], ['redis', '*']])
    expect(parseSinkList(undefined)).toEqual([])
    expect(parseSinkList(' \n ')).toEqual([])
    expect(() => parseSinkList('redis://h')).toThrow(/^OUTBOX_POLLER_SINKS "redis:\/\/h": needs \?stream=/)
  })

  it('mistakes are ConfigErrors naming the spec and its source, with its credentials masked', () => {
    expect(mistake('amqp://guest:s3cret@h:5672/')).toBe('--sink "amqp://guest:***@h:5672/": needs ?exchange=<name> (the exchange events are published to)')
    expect(mistake('nats://h:4222?subject=x')).toMatch(/needs \?stream=/)
    expect(mistake('redis://u:s3cret@h?stream=s&maxlen=0')).toMatch(/^--sink "redis:\/\/u:\*\*\*@h\?stream=s&maxlen=0": \?maxlen must be a positive integer/)
    expect(mistake('kafka://u:s3cret@h/topic')).toBe('--sink "kafka://u:***@h/topic": unknown scheme "kafka" (amqp, amqps, nats, redis, rediss, http, https)')
    expect(mistake('amqp://h/?exchange=x&exchnage=y')).toMatch(/unknown parameter "exchnage" \(known: exchange, declare, heartbeat/)
    expect(mistake('bad*pattern=https://h/')).toMatch(/the pattern must be an event type/)
    expect(mistake('not a url')).toMatch(/must be \[pattern=\]URL/)
    expect(mistake('https://')).toMatch(/is not a valid URL|has no host/)
    expect(mistake('redis://h', 'bench --sink')).toMatch(/^bench --sink "redis:\/\/h": /)
    for (const text of ['amqp://guest:s3cret@h:5672/', 'redis://u:s3cret@h?stream=s&maxlen=0', 'kafka://u:s3cret@h/topic']) expect(mistake(text)).not.toContain('s3cret')
  })

  it('collects the secrets to scrub from error messages: password, token and secret-looking query values, raw and decoded', () => {
    expect(parseSink('https://u:p%40ss@h.test/x?token=abc%2B1&page=2').secrets).toEqual(['p%40ss', 'p@ss', 'abc+1', 'abc+1'])
    expect(parseSink('nats://tok123@n?stream=S').secrets).toEqual(['tok123', 'tok123'])
    expect(parseSink('redis://:pw@h?stream=s').secrets).toEqual([]) // too short to scrub without mangling messages
  })

  it('redactUrl masks passwords, NATS tokens and secret-looking query values, and never throws', () => {
    expect(redactUrl('amqps://user:p%40ss@mq.test/vhost?exchange=x')).toBe('amqps://user:***@mq.test/vhost?exchange=x')
    expect(redactUrl('nats://secrettoken@n.test:4222')).toBe('nats://***@n.test:4222')
    expect(redactUrl('https://h.test/hook?api_key=abc&x=1')).toBe('https://h.test/hook?api_key=***&x=1')
    expect(redactUrl('redis://user@h.test')).toBe('redis://user@h.test') // a Redis user alone is no secret
    expect(redactUrl('amqp//user:pw@host')).toBe('amqp//***@host')
  })
})
