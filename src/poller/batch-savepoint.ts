import type { Sql } from 'postgres'

/** SQLSTATE 25P02: a statement sent after an earlier one failed in the same transaction. */
const inFailedTransaction = '25P02'

/**
 * `--tx-mode batch`: every handler of a batch writes through one savepoint, taken by the first `ctx.tx()`, at
 * the same time, so their statements are pipelined on the batch's one connection instead of taking turns. It
 * is all or nothing: once the handlers ended, either every one that used it succeeded and the savepoint is
 * released, or it is rolled back whole and the dispatch runs those events again, one savepoint each.
 */
export class BatchSavepoint {
  #sent: Promise<unknown> | undefined
  #ready: Promise<Sql> | undefined
  #closed = false

  constructor(readonly connection: Sql) {}

  /** Some handler used it: the batch has writes to keep or undo. */
  get taken(): boolean {
    return this.#sent !== undefined
  }

  /** The connection, behind the SAVEPOINT (sent once, without waiting: it travels with the first statement). */
  take(): Promise<Sql> {
    if (this.#closed) return Promise.reject(new Error('ctx.tx() is only available while the poller handles a batch'))
    if (this.#ready === undefined) {
      this.#sent = this.connection.unsafe('savepoint outbox_batch').execute()
      this.#sent.catch(() => {}) // a failed SAVEPOINT fails the RELEASE, then the rollback: the batch fails
      this.#ready = Promise.resolve(this.connection)
    }
    return this.#ready
  }

  /** Keeps the handlers' writes; false when a statement failed, leaving the transaction aborted (the savepoint is then still there). */
  release(): Promise<boolean> {
    this.#closed = true
    return this.connection.unsafe('release savepoint outbox_batch').then(
      () => true,
      () => false,
    )
  }

  /** Undoes every handler's writes and ends the savepoint, both statements in one round trip. */
  async rollBack(): Promise<void> {
    this.#closed = true
    await Promise.all([this.connection.unsafe('rollback to savepoint outbox_batch'), this.connection.unsafe('release savepoint outbox_batch')])
  }
}

/** The handler failed only because another one's statement had aborted the shared transaction first. */
export function abortedByAnother(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === inFailedTransaction
}
