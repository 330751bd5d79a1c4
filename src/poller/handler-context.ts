import type { Sql } from 'postgres'
import { RetryLaterError } from '../errors.js'
import type { HandlerContext, Logger, OutboxEvent } from '../types.js'
import { BatchSavepoint } from './batch-savepoint.js'

/** The RELEASE that ended a turn, sent without waiting for its answer. */
interface PendingRelease {
  readonly sent: Promise<unknown>
  /** The next holder (or `settle`) rolled back to the savepoint it left, after it failed. */
  cleaned: boolean
}

/**
 * Handlers that use `ctx.tx()` take turns: a batch transaction has one connection. A turn that succeeded ends
 * as soon as its RELEASE is sent, so the next handler's SAVEPOINT and first statement follow it in the same
 * round trip: one round trip per event in the common case, not two.
 *
 * A RELEASE fails only when the handler left the transaction aborted (it caught its own SQL error): then the
 * savepoint is still there, the next holder's SAVEPOINT and statements fail too, and that holder rolls back to
 * the savepoint left behind — undoing the failed event's writes only — and is deferred (no attempt charged, it
 * was not its fault). With no next holder, `settle` does it before the batch settles.
 */
export class SavepointTurns {
  #tail: Promise<PendingRelease | undefined> = Promise.resolve(undefined)
  /** What the last turn to end ended with (turns end in the order they were taken). */
  #last: PendingRelease | undefined

  constructor(readonly connection: Sql) {}

  /** Resolves when it is the caller's turn, with the release the previous turn ended with and the function that ends this one. */
  take(): Promise<{ previous: PendingRelease | undefined; end: (release?: PendingRelease) => void }> {
    let resolve!: (release: PendingRelease | undefined) => void
    const mine = new Promise<PendingRelease | undefined>((done) => (resolve = done))
    const end = (release?: PendingRelease) => {
      this.#last = release
      resolve(release)
    }
    const previous = this.#tail
    this.#tail = previous.then(() => mine)
    return previous.then((release) => ({ previous: release, end }))
  }

  /**
   * Once every handler of the batch ended: rolls back to the savepoint a failed last RELEASE left, so the batch
   * can settle. (A turn taken and never ended — a handler calling ctx.tx() after it returned — is not waited for.)
   */
  async settle(): Promise<void> {
    const last = this.#last
    if (last === undefined || last.cleaned || !(await failed(last.sent))) return
    last.cleaned = true
    await rollBackTo(this.connection)
  }
}

/**
 * One event's context, shared by its handlers. Its signal, child logger and savepoint are made only
 * when a handler asks for them, so a plain handler costs one small object.
 */
/** One function for every context whose handler is not running asynchronously (no closure per event). */
const noFailure = (): void => {}

export class EventContext implements HandlerContext {
  #controller: AbortController | undefined
  #log: Logger | undefined
  #savepoint: Promise<Sql> | undefined
  /** The SAVEPOINT statement, sent without waiting: it travels with the handler's first statement. */
  #savepointSent: Promise<unknown> | undefined
  /** The RELEASE that ended the previous turn, if it was sent unanswered. */
  #previous: PendingRelease | undefined
  #endTurn: ((release?: PendingRelease) => void) | undefined
  /** Fails the running handler (timeout or forced stop); replaced while an async handler runs. */
  fail: (reason: Error) => void = noFailure
  /** A handler wrote through the batch's one savepoint (`--tx-mode batch`): the event's outcome waits for the batch's. */
  wroteInBatch = false

  constructor(
    private readonly event: OutboxEvent,
    private readonly baseLog: Logger,
    private readonly turns: SavepointTurns | BatchSavepoint | undefined,
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
    if (turns instanceof BatchSavepoint) {
      this.wroteInBatch = true
      return turns.take()
    }
    return (this.#savepoint ??= turns.take().then(({ previous, end }) => {
      this.#endTurn = end
      this.#previous = previous
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
    let release: PendingRelease | undefined
    try {
      const connection = await savepoint
      if (!(await failed(this.#savepointSent!))) {
        if (succeeded) {
          // sent, not awaited: the turn passes on now, and the answer is this event's outcome below
          release = { sent: connection.unsafe('release savepoint outbox_handler').execute(), cleaned: false }
          release.sent.catch(() => {}) // observed below, by the next holder, or dropped with an abandoned batch
        } else await rollBackTo(connection)
        return
      }
      // No savepoint: the transaction was aborted before this turn. If the previous turn's RELEASE failed, its
      // savepoint is the one to roll back to (its event fails; this one was not at fault). Otherwise (a cancel, a
      // lost connection), undo what can be undone, and fail this event.
      const previous = this.#previous
      const inherited = previous !== undefined && !previous.cleaned && (await failed(previous.sent))
      if (inherited) previous.cleaned = true
      await rollBackTo(connection)
      throw inherited ? new RetryLaterError('the previous handler left the batch transaction aborted: its savepoint could not be taken') : await this.#savepointSent!.catch((error: unknown) => error)
    } finally {
      this.#endTurn?.(release)
      // e.g. the handler caught its own SQL error, leaving the transaction aborted: the next holder or settle()
      // rolls back to this savepoint, and this event fails
      if (release !== undefined) await release.sent
    }
  }
}

/** Whether a statement sent earlier failed; never rejects. */
function failed(sent: Promise<unknown>): Promise<boolean> {
  return sent.then(
    () => false,
    () => true,
  )
}

/** Undoes the handler's writes and ends its savepoint, both statements in one round trip. */
async function rollBackTo(connection: Sql): Promise<void> {
  await Promise.all([connection.unsafe('rollback to savepoint outbox_handler'), connection.unsafe('release savepoint outbox_handler')])
}
