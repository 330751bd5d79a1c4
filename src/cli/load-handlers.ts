import { access } from 'node:fs/promises'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { ConfigError, errorMessage } from '../errors.js'
import { HandlerRegistry } from '../handler-registry.js'
import type { HandlerMap } from '../types.js'

/**
 * Imports a handler module: its default export is a function `(event, ctx) => …` or an object of
 * event-type patterns to functions. Every problem is a ConfigError, raised before anything is claimed.
 */
export async function loadHandlers(path: string): Promise<HandlerMap> {
  const absolute = resolve(path)
  try {
    await access(absolute)
  } catch {
    throw new ConfigError(`handler module ${path} not found (resolved to ${absolute})`)
  }
  let module: { default?: unknown }
  try {
    module = (await import(pathToFileURL(absolute).href)) as { default?: unknown }
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
  return handlers as HandlerMap
}
