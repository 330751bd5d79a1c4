import type { SinkSpec } from './parse-sink.js'

/**
 * `{schema}` in a sink's subject, stream or exchange names the event's tenant: with `--schemas`, tenant
 * events land in tenant streams (`nats://…?subject=app.{schema}`, `redis://…?stream=outbox:{schema}`,
 * `amqp://…?exchange={schema}.events`). A per-tenant stream or exchange that does not exist is an outage of
 * that route (the events wait, uncharged), never a rejection.
 */
export const schemaPlaceholder = '{schema}'

export function hasSchemaPlaceholder(name: string): boolean {
  return name.includes(schemaPlaceholder)
}

/** The name for the event's schema; a name without the placeholder is itself. */
export function routeFor(name: string, schema: string): string {
  return hasSchemaPlaceholder(name) ? name.replaceAll(schemaPlaceholder, schema) : name
}

/** Whether a sink's events go to a route of their tenant's, so that one tenant's route can be down alone. */
export function routesBySchema(spec: SinkSpec): boolean {
  switch (spec.kind) {
    case 'amqp':
      return hasSchemaPlaceholder(spec.exchange)
    case 'nats':
      return hasSchemaPlaceholder(spec.stream) || hasSchemaPlaceholder(spec.subject)
    case 'redis':
      return hasSchemaPlaceholder(spec.stream)
    case 'webhook':
      return false
  }
}
