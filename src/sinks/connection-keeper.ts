import { ConfigError } from '../errors.js'
import { type OutageLog, outageRetryDelayMs } from './outage-log.js'
import { sinkErrorMessage, sinkUnavailable, withTimeout } from './sink-errors.js'

/** How a broker's client library opens and closes one connection (with what publishing needs on it). */
export interface ConnectionDriver<C> {
  /**
   * Opens a connection ready to publish. Calls `lost` if it drops later. Rejects with a ConfigError for a
   * mistake no retry fixes (credentials refused, a missing exchange or stream); anything else means the
   * broker is unavailable.
   */
  open(lost: (reason: string) => void): Promise<C>
  /** Closes the connection, best effort. */
  close(connection: C): Promise<void>
}

export interface KeeperOptions {
  /** The sink's redacted name. */
  name: string
  secrets: readonly string[]
  outage: OutageLog
  connectTimeoutMs: number
}

/**
 * Holds a sink's one connection and replaces it when it is lost. While the broker is unavailable `get()`
 * fails at once with RetryLaterError, so no event waits for a connection attempt and none is charged; one
 * background loop reconnects with backoff, and the outage is logged once when it begins (its end, by the sink).
 */
export class ConnectionKeeper<C> {
  #current: C | undefined
  /** Numbers the connections opened, so a late `lost` from an older one is ignored. */
  #generation = 0
  #currentGeneration = -1
  #reason = 'not connected yet'
  #failures = 0
  #timer: NodeJS.Timeout | undefined
  #closed = false

  constructor(
    private readonly driver: ConnectionDriver<C>,
    private readonly options: KeeperOptions,
  ) {}

  /**
   * The first connection. A broker that is down does not stop the poller: the outage is logged and
   * reconnecting goes on in the background. A ConfigError (bad credentials, a missing exchange) rejects.
   */
  async connect(): Promise<void> {
    try {
      await this.#open()
    } catch (error) {
      if (error instanceof ConfigError) throw error
      this.#down(sinkErrorMessage(error, this.options.secrets))
    }
  }

  /** The live connection; while there is none, RetryLaterError at once. */
  get(): C {
    if (this.#current === undefined) throw sinkUnavailable(this.options.name, this.#reason)
    return this.#current
  }

  /** Whether `connection` is still the one in use (errors on a dropped one are consequences of its loss). */
  isCurrent(connection: C): boolean {
    return connection === this.#current
  }

  /** Drops a connection that failed under a publish (or never confirmed it); a new one is opened in the background. */
  lost(connection: C, reason: string): void {
    if (connection === this.#current) this.#drop(reason)
  }

  /** Stops reconnecting and closes the connection. */
  async close(): Promise<void> {
    this.#closed = true
    clearTimeout(this.#timer)
    const connection = this.#current
    this.#current = undefined
    this.#reason = 'sink closed'
    if (connection !== undefined) await withTimeout(this.driver.close(connection), 5_000, () => new Error('close timed out')).catch(() => {})
  }

  async #open(): Promise<void> {
    const generation = ++this.#generation
    let lostEarly: string | undefined
    let abandoned = false
    const opening = this.driver.open((reason) => {
      if (this.#currentGeneration === generation) this.#drop(reason)
      else lostEarly ??= reason
    })
    // A connection that opens after we gave up on it is closed, not leaked.
    opening.then((connection) => void (abandoned && this.driver.close(connection).catch(() => {})), () => {})
    let connection: C
    try {
      connection = await withTimeout(opening, this.options.connectTimeoutMs, () => new Error(`no connection within ${this.options.connectTimeoutMs} ms`))
    } catch (error) {
      abandoned = true
      throw error
    }
    if (this.#closed || lostEarly !== undefined) {
      await this.driver.close(connection).catch(() => {})
      if (lostEarly !== undefined) throw new Error(lostEarly)
      return
    }
    this.#current = connection
    this.#currentGeneration = generation
    this.#failures = 0
    // not yet "available again": that is the first confirmed publish (BrokerSink), since a broker that accepts
    // connections may not take messages yet (JetStream restoring its streams)
  }

  #drop(reason: string): void {
    const connection = this.#current
    if (connection === undefined || this.#closed) return
    this.#current = undefined
    this.#currentGeneration = -1
    void this.driver.close(connection).catch(() => {})
    this.#down(reason)
  }

  #down(reason: string): void {
    this.#reason = reason
    this.options.outage.down(reason)
    this.#schedule()
  }

  #schedule(): void {
    if (this.#closed || this.#timer !== undefined) return
    this.#failures++
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.#open().catch((error: unknown) => {
        if (this.#closed) return
        this.#reason = sinkErrorMessage(error, this.options.secrets)
        this.#schedule()
      })
    }, outageRetryDelayMs(this.#failures))
    this.#timer.unref()
  }
}
