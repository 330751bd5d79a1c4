import { isNetworkError, RetryLaterError } from '../errors.js'
import type { OutboxEvent } from '../types.js'
import { ConnectionKeeper, type ConnectionDriver } from './connection-keeper.js'
import { OutageLog, wholeSink } from './outage-log.js'
import type { SinkSpec } from './parse-sink.js'
import { Semaphore } from './semaphore.js'
import type { ResolvedSinkOptions, Sink } from './sink.js'
import { settleWithin, sinkErrorMessage, sinkRejected, sinkUnavailable } from './sink-errors.js'
import { routesBySchema } from './tenant-route.js'

/** A broker's client library as a sink needs it: a connection driver that can also publish. */
export interface BrokerDriver<C> extends ConnectionDriver<C> {
  /**
   * Publishes a batch's events together (one write, one script call, every publish in flight) and returns
   * one promise per event, resolved once the broker confirmed it. A promise rejects with RetryLaterError
   * when the broker cannot take the event now (the connection stays), an error `isConnectionFailure`
   * recognises when the connection broke, or any other error for a rejection of this message.
   */
  sendBatch(connection: C, events: readonly OutboxEvent[]): Array<Promise<void>>
  /** Errors of `sendBatch` that mean the connection is broken (it is then replaced). */
  isConnectionFailure(error: unknown): boolean
  /** Whether a second batch in flight pays with this broker (see Sink.overlaps; measured in BENCHMARKS.md). */
  readonly overlaps: boolean
}

/**
 * A sink on a broker connection. A batch's messages are published all at once (in windows of `maxInFlight`),
 * then their confirms are awaited together, all within `timeoutMs`. An error for an event becomes either a
 * charged failure of its event (a rejection of the message: the broker's own words, retried with backoff,
 * dead-lettered after the last attempt) or a RetryLaterError (the broker is unavailable: no attempt
 * charged). A publish not confirmed within `timeoutMs` counts as a lost connection: a broker that stopped
 * answering is not the event's fault. A message confirmed before the connection broke stays confirmed.
 */
export class BrokerSink<C> implements Sink {
  readonly name: string
  readonly pattern: string
  readonly overlaps: boolean
  readonly #keeper: ConnectionKeeper<C>
  readonly #outage: OutageLog
  readonly #slots: Semaphore
  readonly #maxInFlight: number
  readonly #secrets: readonly string[]
  readonly #timeoutMs: number
  readonly #routesBySchema: boolean

  constructor(
    spec: SinkSpec,
    private readonly driver: BrokerDriver<C>,
    options: ResolvedSinkOptions,
  ) {
    this.name = spec.name
    this.overlaps = driver.overlaps
    this.pattern = spec.pattern
    this.#secrets = spec.secrets
    this.#timeoutMs = options.timeoutMs
    this.#routesBySchema = routesBySchema(spec)
    this.#maxInFlight = options.maxInFlight
    this.#slots = new Semaphore(options.maxInFlight)
    this.#outage = new OutageLog(options.log, spec.name)
    this.#keeper = new ConnectionKeeper(driver, { name: spec.name, secrets: spec.secrets, outage: this.#outage, connectTimeoutMs: options.timeoutMs })
  }

  connect(): Promise<void> {
    return this.#keeper.connect()
  }

  async publish(event: OutboxEvent, signal?: AbortSignal): Promise<void> {
    const [error] = await this.publishBatch([event], signal)
    if (error !== undefined) throw error
  }

  async publishBatch(events: readonly OutboxEvent[], signal?: AbortSignal): Promise<Array<Error | undefined>> {
    const results: Array<Error | undefined> = []
    // one deadline for the whole batch, so that a batch of several windows stays within the sink timeout
    // (and so below the handler timeout, which would charge the events)
    const deadline = performance.now() + this.#timeoutMs
    for (let from = 0; from < events.length; from += this.#maxInFlight) {
      const window = events.length <= this.#maxInFlight ? events : events.slice(from, from + this.#maxInFlight)
      results.push(...(await this.#publishWindow(window, signal, deadline)))
    }
    return results
  }

  close(): Promise<void> {
    return this.#keeper.close()
  }

  async #publishWindow(events: readonly OutboxEvent[], signal: AbortSignal | undefined, deadline: number): Promise<Array<Error | undefined>> {
    try {
      this.#keeper.get() // fail fast while the broker is down, before queueing for slots
    } catch (error) {
      return events.map(() => error as Error)
    }
    await this.#slots.acquire(signal, events.length)
    try {
      let connection: C
      try {
        connection = this.#keeper.get()
      } catch (error) {
        return events.map(() => error as Error)
      }
      let sends: Array<Promise<void>>
      try {
        sends = this.driver.sendBatch(connection, events)
      } catch (error) {
        sends = events.map(() => Promise.reject(error)) // the connection closed under us: some clients throw at once
      }
      const errors = await settleWithin(sends, Math.max(1, deadline - performance.now()), () => new PublishTimeout(this.#timeoutMs))
      const results = errors.map((error, i) => (error === undefined ? undefined : this.#classify(connection, error, events[i]!)))
      this.#recovered(connection, events, results)
      return results
    } finally {
      this.#slots.release(events.length)
    }
  }

  /**
   * A route is back when a window confirmed some of its events and none of them waits: a reconnected NATS whose
   * stream is not answering yet is still the same outage, logged once. Nothing is back on a connection the window
   * lost; a sink that routes by tenant is back as a whole when its connection carried a confirm.
   */
  #recovered(connection: C, events: readonly OutboxEvent[], results: ReadonlyArray<Error | undefined>): void {
    if (!this.#outage.anyDown || !this.#keeper.isCurrent(connection)) return // nothing to recover from: no per-event work
    const confirmed = new Set<string>()
    const waiting = new Set<string>()
    results.forEach((error, i) => {
      const route = this.#routeOf(events[i]!)
      if (error === undefined) confirmed.add(route)
      else if (error instanceof RetryLaterError) waiting.add(route)
    })
    for (const route of confirmed) if (!waiting.has(route)) this.#outage.up(route)
    if (this.#routesBySchema && confirmed.size > 0) this.#outage.up(wholeSink)
  }

  /** The outage an event's "not now" belongs to: its tenant's route when the sink routes by schema. */
  #routeOf(event: OutboxEvent): string {
    return this.#routesBySchema ? event.schema : wholeSink
  }

  #classify(connection: C, error: unknown, event: OutboxEvent): Error {
    const reason = sinkErrorMessage(error, this.#secrets)
    if (error instanceof RetryLaterError) {
      this.#outage.down(reason, this.#routeOf(event)) // the broker answered "not now": log it once
      return error
    }
    if (!this.#keeper.isCurrent(connection)) return sinkUnavailable(this.name, reason)
    if (error instanceof PublishTimeout || isNetworkError(error) || this.driver.isConnectionFailure(error)) {
      this.#keeper.lost(connection, reason)
      return sinkUnavailable(this.name, reason)
    }
    return sinkRejected(this.name, reason)
  }
}

class PublishTimeout extends Error {
  constructor(ms: number) {
    super(`no confirm within ${ms} ms`)
  }
}
