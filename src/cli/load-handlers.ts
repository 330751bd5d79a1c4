import { access } from 'node:fs/promises'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { ConfigError, errorMessage } from '../errors.js'
import { HandlerRegistry } from '../poller/handler-registry.js'
import type { HandlerMap } from '../types.js'

/** A loaded handler module: its handlers, and the function that closes what it opened, if it has one. */
export interface HandlerModule {
  handlers: HandlerMap
  close: (() => unknown) | undefined
}

/**
 * Imports a handler module: its default export is a function `(event, ctx) => …` or an object of
 * event-type patterns to functions. It closes what it opened through a named export `close` (ES modules),
 * or a `Symbol.asyncDispose` method on its default export (CommonJS: a symbol key is never a pattern).
 * Every problem is a ConfigError, raised before anything is claimed.
 */
export async function loadHandlers(path: string): Promise<HandlerModule> {
  const absolute = resolve(path)
  try {
    await access(absolute)
  } catch {
    throw new ConfigError(`handler module ${path} not found (resolved to ${absolute})`)
  }
  let module: { default?: unknown; close?: unknown }
  try {
    module = (await import(pathToFileURL(absolute).href)) as { default?: unknown; close?: unknown }
  } catch (error) {
    throw new ConfigError(`handler module ${path} failed to load: ${errorMessage(error)}`)
  }
  const handlers = module.default
  if (handlers === undefined) throw new ConfigError(`handler module ${path} has no default export: export a function or an object of event-type patterns to functions`)
  const registry = new HandlerRegistry()
  try {
    registry.addAll(handlers as HandlerMap)
  } catch (error) {
    throw new ConfigError(`handler module ${path}: ${errorMessage(error)}`)
  }
  if (registry.size === 0) throw new ConfigError(`handler module ${path} exports no handlers`)
  return { handlers: handlers as HandlerMap, close: closerOf(module, path) }
}

function closerOf(module: { default?: unknown; close?: unknown }, path: string): (() => unknown) | undefined {
  const exports = module.default as Record<string | symbol, unknown>
  // Node exposes the keys of a CommonJS `module.exports = { …, close }` as named exports too: in an object
  // of patterns, `close` is the handler of the event type "close", not the module's closer.
  const named = typeof exports === 'object' && exports.close === module.close ? undefined : module.close
  const disposer = exports[Symbol.asyncDispose]
  if (named !== undefined && typeof named !== 'function') throw new ConfigError(`handler module ${path}: the export close must be a function (got ${typeof named})`)
  if (disposer !== undefined && typeof disposer !== 'function') throw new ConfigError(`handler module ${path}: [Symbol.asyncDispose] must be a function (got ${typeof disposer})`)
  if (named !== undefined) return named as () => unknown
  return disposer === undefined ? undefined : () => (disposer as () => unknown).call(exports)
}
