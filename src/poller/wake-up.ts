import type { Sql } from 'postgres'
import type { OutboxTable } from '../outbox/outbox-table.js'

/**
 * The wake-up protocol. An idle poller raises the outbox's `asleep` flag, and writers NOTIFY only while it
 * is up (a busy outbox costs its writers nothing); a NOTIFY, or `stop()`, ends the poller's sleep. A NOTIFY
 * that comes while the poller is busy is remembered, so the next sleep returns at once instead of missing it.
 */
export class WakeUp {
  readonly #setAsleep: string
  readonly #clearAsleep: string
  /** This poller raised the flag and has not lowered it. */
  #raised = false
  #pending = false
  #wake: () => void = () => (this.#pending = true)

  constructor(outbox: OutboxTable) {
    this.#setAsleep = `update ${outbox.wakeup} set asleep = true where not asleep`
    this.#clearAsleep = `update ${outbox.wakeup} set asleep = false where asleep`
  }

  get raised(): boolean {
    return this.#raised
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
