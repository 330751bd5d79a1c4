import { jitteredDelayMs } from '../poller/backoff.js'
import type { Logger } from '../types.js'

/** How long an unavailable sink waits before it tries again after `failures` failures in a row: 0.5 s doubling to 30 s, jittered. */
export function outageRetryDelayMs(failures: number): number {
  return jitteredDelayMs(failures, 500, 30_000)
}

/** The whole sink (its connection, or a sink with one route); a tenant's route is its schema's name. */
export const wholeSink = ''

/**
 * Logs a sink's outage once: a warning when it becomes unavailable, one info line when it is back. Events
 * deferred in between log nothing, so a ten-minute outage is two lines, not one per event per retry. A sink that
 * routes by tenant (`{schema}`) also keeps each tenant's route apart: one tenant's missing stream is its own outage,
 * logged once, however often the other tenants' batches get through meanwhile.
 */
export class OutageLog {
  readonly #downSince = new Map<string, number>()

  constructor(
    private readonly log: Logger,
    private readonly sink: string,
  ) {}

  get isDown(): boolean {
    return this.#downSince.has(wholeSink)
  }

  /** Some outage, of the whole sink or of a route, is open: there is a recovery to look for. */
  get anyDown(): boolean {
    return this.#downSince.size > 0
  }

  /** Records the outage; logs only if it just began. */
  down(reason: string, route = wholeSink): void {
    if (this.#downSince.has(route)) return
    this.#downSince.set(route, Date.now())
    this.log.warn({ sink: this.sink, ...routeField(route), error: reason }, 'sink unavailable: its events wait, no attempt charged, reconnecting in the background')
  }

  /** Records the recovery; logs only if there was an outage. */
  up(route = wholeSink): void {
    const since = this.#downSince.get(route)
    if (since === undefined) return
    this.log.info({ sink: this.sink, ...routeField(route), down_ms: Date.now() - since }, 'sink available again')
    this.#downSince.delete(route)
  }
}

function routeField(route: string): { schema?: string } {
  return route === wholeSink ? {} : { schema: route }
}
