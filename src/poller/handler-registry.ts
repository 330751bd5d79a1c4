import { ConfigError } from '../errors.js'
import { parseEventTypePattern } from './event-type-pattern.js'
import type { Handler, HandlerMap } from '../types.js'

/**
 * Routes event types to handlers. Patterns: an exact type (`issue.created`), a prefix wildcard
 * (`issue.*` matches `issue.created` and `issue.comment.added`) or `*` for everything. Every matching
 * handler runs. Matches are cached per event type, so routing costs one map lookup per event.
 */
export class HandlerRegistry {
  readonly #routes: Array<{ pattern: string; prefix: string | null; handler: Handler }> = []
  readonly #cache = new Map<string, readonly Handler[]>()

  constructor(handlers?: HandlerMap) {
    if (handlers !== undefined) this.addAll(handlers)
  }

  /** Registers one handler for a pattern. */
  add(pattern: string, handler: Handler): void {
    if (typeof handler !== 'function') throw new ConfigError(`handler for ${JSON.stringify(pattern)} must be a function (got ${typeof handler})`)
    const parsed = parseEventTypePattern(pattern, 'handler pattern')
    const prefix = parsed.kind === 'all' ? '' : parsed.kind === 'prefix' ? parsed.prefix : null
    this.#routes.push({ pattern, prefix, handler })
    this.#cache.clear()
  }

  /** Registers a function (for every event) or a map of patterns to functions. */
  addAll(handlers: HandlerMap): void {
    if (typeof handlers === 'function') return this.add('*', handlers)
    if (handlers === null || typeof handlers !== 'object') {
      throw new ConfigError(`handlers must be a function or an object of event-type patterns to functions (got ${handlers === null ? 'null' : typeof handlers})`)
    }
    for (const [pattern, handler] of Object.entries(handlers)) this.add(pattern, handler)
  }

  get size(): number {
    return this.#routes.length
  }

  /** The handlers for an event type, in registration order. */
  match(eventType: string): readonly Handler[] {
    let handlers = this.#cache.get(eventType)
    if (handlers === undefined) {
      handlers = this.#routes
        .filter((route) => (route.prefix === null ? route.pattern === eventType : eventType.startsWith(route.prefix)))
        .map((route) => route.handler)
      this.#cache.set(eventType, handlers)
    }
    return handlers
  }
}
