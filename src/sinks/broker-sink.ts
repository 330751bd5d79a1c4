import { isNetworkError, RetryLaterError } from '../errors.js'
import type { OutboxEvent } from '../types.js'
import { ConnectionKeeper, type ConnectionDriver } from './connection-keeper.js'
import { OutageLog } from './outage-log.js'
import type { SinkSpec } from './parse-sink.js'
import { Semaphore } from './semaphore.js'
import type { ResolvedSinkOptions, Sink } from './sink.js'
import { sinkErrorMessage, sinkRejected, sinkUnavailable, withTimeout } from './sink-errors.js'

/** A broker's client library as a sink needs it: a connection driver that can also publish. */
export interface BrokerDriver<C> extends ConnectionDriver<C> {
  /**
   * Publishes one event; resolves once the broker confirmed it. Throws RetryLaterError when the broker cannot
   * take it now (the connection stays), an error `isConnectionFailure` recognises when the connection broke,
   * or any other error for a rejection of this message.
   */
  send(connection: C, event: OutboxEvent): Promise<void>
  /** Errors of `send` that mean the connection is broken (it is then replaced). */
  isConnectionFailure(error: unknown): boolean
}

/**
 * A sink on a broker connection. An error from `send` becomes either a charged failure (a rejection of the
 * message: the broker's own words, retried with backoff, dead-lettered after the last attempt) or a
 * RetryLaterError (the broker is unavailable: no attempt charged). A publish not confirmed within
 * `timeoutMs` counts as a lost connection: a broker that stopped answering is not the event's fault.
 */
export class BrokerSink<C> implements Sink {
  readonly name: string
  readonly pattern: string
  readonly #keeper: ConnectionKeeper<C>
  readonly #outage: OutageLog
  readonly #slots: Semaphore
  readonly #secrets: readonly string[]
  readonly #timeoutMs: number

  constructor(
    spec: SinkSpec,
    private readonly driver: BrokerDriver<C>,
    options: ResolvedSinkOptions,
  ) {
    this.name = spec.name
    this.pattern = spec.pattern
    this.#secrets = spec.secrets
    this.#timeoutMs = options.timeoutMs
    this.#slots = new Semaphore(options.maxInFlight)
    this.#outage = new OutageLog(options.log, spec.name)
    this.#keeper = new ConnectionKeeper(driver, { name: spec.name, secrets: spec.secrets, outage: this.#outage, connectTimeoutMs: options.timeoutMs })
  }

  connect(): Promise<void> {
    return this.#keeper.connect()
  }

  async publish(event: OutboxEvent, signal?: AbortSignal): Promise<void> {
    this.#keeper.get() // fail fast while the broker is down, before queueing for a slot
    await this.#slots.acquire(signal)
    let connection: C | undefined
    try {
      connection = this.#keeper.get()
      await withTimeout(this.driver.send(connection, event), this.#timeoutMs, () => new PublishTimeout(this.#timeoutMs))
    } catch (error) {
      throw this.#classify(connection, error)
    } finally {
      this.#slots.release()
    }
    this.#outage.up()
  }

  close(): Promise<void> {
    return this.#keeper.close()
  }

  #classify(connection: C | undefined, error: unknown): Error {
    const reason = sinkErrorMessage(error, this.#secrets)
    if (error instanceof RetryLaterError) {
      if (connection !== undefined) this.#outage.down(reason) // the broker answered "not now": log it once
      return error
    }
    if (connection === undefined || !this.#keeper.isCurrent(connection)) return sinkUnavailable(this.name, reason)
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
