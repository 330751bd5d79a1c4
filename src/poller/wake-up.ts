import { randomUUID } from 'node:crypto'
import type { Sql } from 'postgres'
import type { OutboxTable } from '../outbox/outbox-table.js'

/** How long start-up waits for its own NOTIFY to come back before deciding that LISTEN does not work. */
const listenCheckMs = 2_000

/**
 * The wake-up protocol. An idle poller raises the outbox's `asleep` flag, and writers NOTIFY only while it
 * is up (a busy outbox costs its writers nothing); a NOTIFY, or `stop()`, ends the poller's sleep. A NOTIFY
 * that comes while the poller is busy is remembered, so the next sleep returns at once instead of missing it.
 * A poller that does not listen never raises the flag: it just polls, at most `intervalMax` apart.
 */
export class WakeUp {
  readonly #channel: string
  readonly #setAsleep: string
  readonly #clearAsleep: string
  #unlisten: (() => Promise<void>) | undefined
  /** This poller raised the flag and has not lowered it. */
  #raised = false
  #pending = false
  #wake: () => void = () => (this.#pending = true)

  constructor(outbox: OutboxTable) {
    this.#channel = outbox.channel
    this.#setAsleep = `update ${outbox.wakeup} set asleep = true where not asleep`
    this.#clearAsleep = `update ${outbox.wakeup} set asleep = false where asleep`
  }

  get raised(): boolean {
    return this.#raised
  }

  /** NOTIFYs reach this poller: it may raise the flag and sleep until one comes. */
  get listening(): boolean {
    return this.#unlisten !== undefined
  }

  /**
   * LISTENs on `listener` (a pool whose LISTEN connection postgres.js keeps, re-listening after a
   * reconnect), then checks that a NOTIFY sent through `sql` arrives. Behind a pooler in transaction mode
   * LISTEN holds only for its own statement and nothing arrives: then it stops listening and returns false.
   * `onNotify` sees every other notification's payload (a pause or resume names itself there).
   */
  async listen(listener: Sql, sql: Sql, onNotify: (payload: string) => void = () => {}): Promise<boolean> {
    const token = `outbox-poller listen check ${randomUUID()}`
    let arrived: () => void = () => {}
    const checked = new Promise<boolean>((resolve) => {
      arrived = () => resolve(true)
      setTimeout(() => resolve(false), listenCheckMs).unref()
    })
    const { unlisten } = await listener.listen(this.#channel, (payload) => {
      if (payload === token) return arrived()
      onNotify(payload)
      this.wake()
    })
    await sql`select pg_notify(${this.#channel}, ${token})`
    if (await checked) this.#unlisten = unlisten
    else await unlisten().catch(() => {})
    return this.listening
  }

  async unlisten(): Promise<void> {
    const unlisten = this.#unlisten
    this.#unlisten = undefined
    await unlisten?.().catch(() => {})
  }

  /** Raises the flag (the caller then looks once more: an event committed just before it was seen never notified). */
  async raise(sql: Sql): Promise<void> {
    this.#raised = true
    await sql.unsafe(this.#setAsleep).catch(() => (this.#raised = false))
  }

  /** Lowers the flag if this poller raised it: a busy or stopped poller must not leave writers notifying for nobody. */
  async lower(sql: Sql): Promise<void> {
    if (!this.#raised) return
    this.#raised = false
    await sql.unsafe(this.#clearAsleep).catch(() => {})
  }

  /** A NOTIFY came, or the poller is stopping: ends the current sleep, or the next one. */
  wake(): void {
    this.#wake()
  }

  /** Sleeps `ms` unless woken. */
  sleep(ms: number): Promise<void> {
    if (this.#pending) {
      this.#pending = false
      return Promise.resolve()
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(), ms)
      const done = () => {
        clearTimeout(timer)
        this.#wake = () => (this.#pending = true)
        resolve()
      }
      this.#wake = done
    })
  }
}
