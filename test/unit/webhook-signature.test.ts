import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import { signWebhook, verifyWebhookSignature, webhookSigningKey } from '../../src/sinks/webhook-signature.js'
import { retryAfterMs } from '../../src/sinks/webhook-sink.js'

// The Standard Webhooks specification's own example.
const key = webhookSigningKey('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')
const body = '{"test": 2432232314}'
const message = { id: 'msg_p5jXN8AQM9LWM0D4loKWxJek', timestamp: '1614265330', signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=', body }
const sentAt = 1614265330_000

describe('webhook signatures', () => {
  it('signs as the Standard Webhooks example does', () => {
    expect(signWebhook(key, message.id, 1614265330, body)).toBe(message.signature)
  })

  it('whsec_ secrets are base64-decoded, others used as their bytes; an empty or broken one is a ConfigError', () => {
    expect(webhookSigningKey('plain secret')).toEqual(Buffer.from('plain secret'))
    expect(webhookSigningKey('whsec_dGVzdA==')).toEqual(Buffer.from('test'))
    expect(() => webhookSigningKey('')).toThrow(ConfigError)
    expect(() => webhookSigningKey('whsec_***')).toThrow(ConfigError)
    expect(() => webhookSigningKey('whsec_')).toThrow(ConfigError)
  })

  it('verifies a valid signature among several, and refuses another body, another id or another key', () => {
    expect(verifyWebhookSignature(key, message, 300, sentAt)).toBe(true)
    expect(verifyWebhookSignature(key, { ...message, signature: `v1,bm90IGl0 ${message.signature}` }, 300, sentAt)).toBe(true)
    expect(verifyWebhookSignature(key, { ...message, body: '{"test": 1}' }, 300, sentAt)).toBe(false)
    expect(verifyWebhookSignature(key, { ...message, id: 'msg_other' }, 300, sentAt)).toBe(false)
    expect(verifyWebhookSignature(webhookSigningKey('another secret'), message, 300, sentAt)).toBe(false)
    expect(verifyWebhookSignature(key, { ...message, signature: message.signature.replace('v1,', 'v2,') }, 300, sentAt)).toBe(false)
  })

  it('refuses a timestamp outside the tolerance (a replay) or one that is not a number', () => {
    expect(verifyWebhookSignature(key, message, 300, sentAt + 299_000)).toBe(true)
    expect(verifyWebhookSignature(key, message, 300, sentAt + 301_000)).toBe(false)
    expect(verifyWebhookSignature(key, message, 300, sentAt - 301_000)).toBe(false)
    expect(verifyWebhookSignature(key, { ...message, timestamp: '1614265330.0' }, 300, sentAt)).toBe(false)
  })
})

describe('Retry-After', () => {
  const now = Date.parse('2026-01-01T00:00:00Z')

  it('reads delay-seconds and HTTP dates, never below 0 nor above an hour', () => {
    expect(retryAfterMs('2', now)).toBe(2000)
    expect(retryAfterMs(' 0 ', now)).toBe(0)
    expect(retryAfterMs(new Date(now + 10_000).toUTCString(), now)).toBe(10_000)
    expect(retryAfterMs(new Date(now - 10_000).toUTCString(), now)).toBe(0)
    expect(retryAfterMs('86400', now)).toBe(3_600_000)
  })

  it('is undefined when absent or unreadable', () => {
    expect(retryAfterMs(null, now)).toBeUndefined()
    expect(retryAfterMs('', now)).toBeUndefined()
    expect(retryAfterMs('soon', now)).toBeUndefined()
  })
})
