import type { SpanContext } from '@opentelemetry/api'

/**
 * The W3C traceparent form, as the capture's event context accepts it (0006_trace_context.sql): two hex digits of
 * version (not ff), a 32-digit trace id and a 16-digit span id (neither all zeros), two digits of flags; a version
 * above 00 may carry further fields.
 */
const traceparentForm = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/
const zeros = /^0+$/

/** The span context a W3C traceparent names (remote), or undefined when it is not of the W3C form. */
export function parseTraceparent(text: unknown): SpanContext | undefined {
  if (typeof text !== 'string') return undefined
  const match = traceparentForm.exec(text)
  if (match === null) return undefined
  const [, version, traceId, spanId, flags, rest] = match as unknown as [string, string, string, string, string, string | undefined]
  if (version === 'ff' || (version === '00' && rest !== undefined) || zeros.test(traceId) || zeros.test(spanId)) return undefined
  return { traceId, spanId, traceFlags: Number.parseInt(flags, 16), isRemote: true }
}

/** The version-00 traceparent of a span context. */
export function formatTraceparent(context: SpanContext): string {
  return `00-${context.traceId}-${context.spanId}-${(context.traceFlags & 0xff).toString(16).padStart(2, '0')}`
}

/** The writer's traceparent, stored in an event's metadata, when it has the W3C form (`outbox.metadata` could hold anything there). */
export function writerTraceparent(metadata: Record<string, unknown> | null): string | undefined {
  const value = metadata?.traceparent
  return parseTraceparent(value) === undefined ? undefined : (value as string)
}
