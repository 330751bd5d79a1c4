import type { Sql } from 'postgres'
import type { HandlerContext, Logger, OutboxEvent } from '../types.js'

/** Handlers that use `ctx.tx()` take turns: a batch transaction has one connection. */
export class SavepointTurns {
  #tail: Promise<void> = Promise.resolve()

  constructor(readonly connection: Sql) {}

  /** Resolves when it is the caller's turn, with the function that ends it. */
  take(): Promise<() => void> {
    let release!: () => void
    const mine = new Promise<void>((resolve) => (release = resolve))
    const previous = this.#tail
    this.#tail = previous.then(() => mine)
    return previous.then(() => release)
  }
}

/**
 * One event's context, shared by its handlers. Its signal, child logger and savepoint are made only
 * when a handler asks for them, so a plain handler costs one small object.
 */
export class EventContext implements HandlerContext {
  #controller: AbortController | undefined
  #log: Logger | undefined
  #savepoint: Promise<Sql> | undefined
  /** The SAVEPOINT statement, sent without waiting: it travels with the handler's first statement. */
  #savepointSent: Promise<unknown> | undefined
  #endTurn: (() => void) | undefined
  /** Fails the running handler (timeout or forced stop); replaced while an async handler runs. */
  fail: (reason: Error) => void = () => {}

  constructor(
    private readonly event: OutboxEvent,
    private readonly baseLog: Logger,
    private readonly turns: SavepointTurns | undefined,
  ) {}

  get signal(): AbortSignal {
    return (this.#controller ??= new AbortController()).signal
  }

  get log(): Logger {
    return (this.#log ??= this.baseLog.child({ event_id: this.event.event_id, event_type: this.event.event_type }))
  }

  tx(): Promise<Sql> {
    const turns = this.turns
    if (turns === undefined) return Promise.reject(new Error('ctx.tx() is only available while the poller handles a batch'))
    return (this.#savepoint ??= turns.take().then((endTurn) => {
      this.#endTurn = endTurn
      // One connection runs statements in order: the handler's first statement queues right behind this one,
      // so both go out in one round trip. If it fails, so does that statement; finish() reports it.
      const sent = turns.connection.unsafe('savepoint outbox_handler').execute()
      sent.catch(() => {}) // observed by finish(), or dropped with an abandoned batch
      this.#savepointSent = sent
      return turns.connection
    }))
  }

  abort(reason: Error): void {
    ;(this.#controller ??= new AbortController()).abort(reason)
  }

  /** Ends the event's savepoint, if a handler took one (else undefined: no microtask): kept on success, rolled back on failure. */
  finish(succeeded: boolean): Promise<void> | undefined {
    return this.#savepoint === undefined ? undefined : this.#endSavepoint(this.#savepoint, succeeded)
  }

  /** The batch was stopped (its transaction is gone or rolls back whole): end the turn without a statement. */
  abandon(): void {
    this.#endTurn?.()
  }

  async #endSavepoint(savepoint: Promise<Sql>, succeeded: boolean): Promise<void> {
    try {
      const connection = await savepoint
      try {
        await this.#savepointSent
        if (succeeded) await connection.unsafe('release savepoint outbox_handler')
        else await rollBackTo(connection)
      } catch (error) {
        // e.g. the handler caught its own SQL error, leaving the transaction aborted: undo its writes so the
        // batch's other events can still settle, and fail this event
        await rollBackTo(connection)
        throw error
      }
    } finally {
      this.#endTurn?.()
    }
  }
}

/** Undoes the handler's writes and ends its savepoint, both statements in one round trip. */
async function rollBackTo(connection: Sql): Promise<void> {
  await Promise.all([connection.unsafe('rollback to savepoint outbox_handler'), connection.unsafe('release savepoint outbox_handler')])
}
