import { createHmac, timingSafeEqual } from 'node:crypto'
import { ConfigError } from '../errors.js'

/**
 * The Standard Webhooks signature scheme (standardwebhooks.com): `webhook-signature: v1,<base64 of
 * HMAC-SHA256 over "<webhook-id>.<webhook-timestamp>.<body>">`. Receivers verify it with any Standard
 * Webhooks library, or with `verifyWebhookSignature`.
 */

/** The HMAC key of a secret: `whsec_<base64>` is base64-decoded; any other text is used as its bytes. */
export function webhookSigningKey(secret: string): Buffer {
  if (!secret.startsWith('whsec_')) {
    if (secret === '') throw new ConfigError('the sink secret must not be empty')
    return Buffer.from(secret, 'utf8')
  }
  const encoded = secret.slice('whsec_'.length)
  const key = Buffer.from(encoded, 'base64')
  if (key.length === 0 || key.toString('base64').replace(/=+$/, '') !== encoded.replace(/=+$/, '')) {
    throw new ConfigError('the sink secret starts with whsec_ but the rest is not base64')
  }
  return key
}

/** The `webhook-signature` value for one message: `v1,<base64>`. */
export function signWebhook(key: Buffer, id: string, timestamp: number, body: string): string {
  return `v1,${createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64')}`
}

/**
 * Whether one of the space-separated signatures of `signature` is valid for the message, and the
 * timestamp within `toleranceSeconds` of now (a replayed old message fails).
 */
export function verifyWebhookSignature(
  key: Buffer,
  message: { id: string; timestamp: string; signature: string; body: string },
  toleranceSeconds = 300,
  now = Date.now(),
): boolean {
  const timestamp = Number(message.timestamp)
  if (!/^\d+$/.test(message.timestamp) || Math.abs(now / 1000 - timestamp) > toleranceSeconds) return false
  const expected = Buffer.from(signWebhook(key, message.id, timestamp, message.body).slice(3), 'base64')
  return message.signature.split(' ').some((candidate) => {
    if (!candidate.startsWith('v1,')) return false
    const given = Buffer.from(candidate.slice(3), 'base64')
    return given.length === expected.length && timingSafeEqual(given, expected)
  })
}
