import type { Sql } from 'postgres'
import { type ClaimQueries, outboxRollback } from '../poller/claim.js'
import type { SharedRoom } from '../poller/dispatch-batch.js'
import { SavepointTurns } from '../poller/handler-context.js'
import { HandlerSlots } from '../poller/handler-slots.js'
import type { BatchResult, SharedBatch } from '../poller/run-batch.js'
import type { Logger } from '../types.js'
import type { TenantOutbox } from './tenant-outbox.js'

/** What a tenant's part of a shared turn came to: its batch's result, or the error its own turn would have failed with. */
export type SharedOutcome = { tenant: TenantOutbox; result: BatchResult } | { tenant: TenantOutbox; error: unknown }

/**
 * Most tenants in one shared transaction. Each tenant's settlement is a savepoint, a subtransaction of its own:
 * past 64 of them, a transaction's subtransactions overflow what other sessions' snapshots check cheaply.
 */
export const sharedTurnMax = 32

const noneDead: ReadonlySet<string> = new Set()

/** How every shared turn of a poller runs. */
export interface SharedTurnOptions {
  /** The BEGIN of a batch transaction and what follows its claim (claim.ts): every tenant's begins alike. */
  statements: Pick<ClaimQueries, 'begin' | 'afterClaim'>
  /** `--concurrency`: handlers at once across the turn's batches. */
  concurrency: number
  /** The batch transaction's `idle_in_transaction_session_timeout` (0: none). */
  idleInTransactionMs: number
  /**
   * The tenants' batches one after another, not at once: under a supervisor (`beforeDispatch`), so a crash is
   * charged to one tenant's events only. It cannot tell which of the events in flight killed the worker, and
   * charges them all: several tenants' at once, an innocent tenant's events would pay for another's poison, and
   * with replicas racing to reclaim a dead one's rows, more than once.
   */
  oneAfterAnother: boolean
  log: Logger
}

/**
 * One turn for several tenants in one transaction on the claim connection: BEGIN and every tenant's claim go out
 * at once (one round trip), then the tenants' batches are handled at the same time, each as its own (its
 * announcements to the supervisor, its verdicts), `--concurrency` handlers at once across them, then every
 * settlement goes out at once, each inside its own savepoint, and one COMMIT. A cold tenant's event costs a share
 * of three round trips instead of three of its own, and waits for one handler of a hot tenant's batch at most,
 * not for the batch: the turn lasts about as long as its longest batch, not as the sum of them. A settlement that
 * fails (a schema dropped meanwhile) is rolled back to its savepoint, alone: the other tenants' settlements
 * commit, and that tenant's events, not settled, are claimable again, as after a failed batch of its own.
 *
 * Undefined when the claims cannot share the transaction (one failed, or one locked rows past its byte budget,
 * which only a rollback frees): it is rolled back before any handler ran, and the caller gives each tenant a
 * turn of its own. Since a crash of the process rolls back the whole transaction, a tenant's events handled
 * earlier in it are handled again, as a crashed batch's events are: at least once, as always.
 */
export async function sharedTurn(connection: Sql, tenants: readonly TenantOutbox[], options: SharedTurnOptions): Promise<SharedOutcome[] | undefined> {
  const { statements, log } = options
  const started = connection.unsafe(statements.begin).execute()
  // a turn lasts as long as its longest batch, and the tenants notified meanwhile wait for its end: a tenant's
  // batch is one round of handlers (`--concurrency` events), not a backlog's full batch, while others share the turn
  const most = tenants.length > 1 ? options.concurrency : Number.POSITIVE_INFINITY
  const claims = tenants.map((tenant) => tenant.runner.sharedClaim(connection, tenant.deferrals, most))
  // after every claim, as after a batch's own: the handlers plan their statements as configured, not as the claim is
  const reset = connection.unsafe(statements.afterClaim).execute()
  const claimed = await Promise.allSettled([started, reset, ...claims])
  const parts = claimed.slice(2).map((settled) => (settled.status === 'fulfilled' ? (settled.value as SharedBatch | undefined) : undefined))
  if (claimed.some((settled) => settled.status === 'rejected') || parts.includes(undefined)) {
    await outboxRollback(connection).catch(() => {})
    for (const tenant of tenants) tenant.runner.sharedAborted()
    return undefined
  }
  const batches = parts as SharedBatch[]
  const outcomes = (each: (part: SharedBatch, index: number) => SharedOutcome) => batches.map(each)
  // one connection: a handler's ctx.tx() savepoint takes its turn with every batch's, and --concurrency is the turn's
  const room: SharedRoom = { turns: new SavepointTurns(connection), slots: new HandlerSlots(options.concurrency) }
  const failures = await dispatchAll(connection, batches, room, options)
  if (failures.size > 0) {
    // the whole transaction ends: the tenants whose batches stopped recover as after their own; the others just go again
    await outboxRollback(connection).catch(() => {})
    const forced = tenants.some((tenant) => tenant.runner.forced)
    if (forced) log.warn({ events: batches.reduce((sum, part) => sum + part.rows.length, 0) }, 'forced stop: batch rolled back, its events return to the queue')
    return outcomes((part, index) => (failures.has(part) && !forced ? { tenant: tenants[index]!, error: (part.runner.sharedEnd(part, undefined, failures.get(part)), failures.get(part)) } : { tenant: tenants[index]!, result: part.runner.sharedEnd(part, undefined) }))
  }
  const dead = new Map<SharedBatch, ReadonlySet<string>>()
  const failed = new Map<SharedBatch, unknown>()
  try {
    // a handler that caught its own SQL error may have left the transaction aborted: the settlements need it clean
    await room.turns.settle()
    await settleAll(connection, batches.filter((part) => part.rows.length > 0), dead, failed)
    await connection.unsafe('commit')
  } catch (error) {
    await outboxRollback(connection).catch(() => {})
    return outcomes((part, index) => ({ tenant: tenants[index]!, error: (part.runner.sharedEnd(part, undefined, error), error) }))
  }
  return outcomes((part, index) => {
    const tenant = tenants[index]!
    if (failed.has(part)) return { tenant, error: (part.runner.sharedEnd(part, undefined, failed.get(part)), failed.get(part)) }
    return { tenant, result: part.runner.sharedEnd(part, dead.get(part) ?? noneDead) }
  })
}

/**
 * Every batch's handlers, at the same time (or one batch after another: `oneAfterAnother`); returns the batches
 * stopped (with why), which end the whole transaction. A suspect batch (one event its batch died with, claimed
 * alone) runs first, alone, as a suspect does in a single outbox: were it to kill the batch again, nothing else
 * was in flight. After a batch stopped, the others run to their end (a lost connection or a forced stop stops
 * them too); one after another, none starts after it.
 */
async function dispatchAll(connection: Sql, batches: readonly SharedBatch[], room: SharedRoom, { idleInTransactionMs, oneAfterAnother }: SharedTurnOptions): Promise<Map<SharedBatch, unknown>> {
  const failures = new Map<SharedBatch, unknown>()
  // the transaction's idle timeout bounds one batch's handlers, not several tenants' sharing --concurrency: a
  // statement now and then keeps it from ending a transaction that is busy (its answer is of no interest)
  const alive: Promise<unknown>[] = []
  const timer = idleInTransactionMs > 0 ? setInterval(() => void alive.push(connection.unsafe('select 1').execute().catch(() => {})), idleInTransactionMs / 2) : undefined
  const dispatch = (part: SharedBatch) => part.runner.sharedDispatch(connection, part, room).catch((error: unknown) => void failures.set(part, error))
  // one after another: each batch leaves the transaction clean for the next, as a batch of its own does
  const alone = async (part: SharedBatch) => {
    await dispatch(part)
    if (failures.size === 0) await room.turns.settle().catch((error: unknown) => void failures.set(part, error))
  }
  try {
    for (const part of batches) if ((oneAfterAnother || part.batch.suspect) && failures.size === 0) await alone(part)
    if (failures.size === 0 && !oneAfterAnother) await Promise.all(batches.filter((part) => !part.batch.suspect).map(dispatch))
  } finally {
    clearInterval(timer)
    await Promise.all(alive)
  }
  return failures
}

/**
 * Every settlement at once, each as `savepoint; its statements; release`: after one fails, the rest fail too (the
 * transaction is aborted), so that one is rolled back to its savepoint, and the rest are sent again. Throws when
 * even that fails (the connection lost): the whole transaction is gone.
 */
async function settleAll(connection: Sql, parts: readonly SharedBatch[], dead: Map<SharedBatch, ReadonlySet<string>>, failed: Map<SharedBatch, unknown>): Promise<void> {
  for (let from = 0; from < parts.length; ) {
    const sent = parts.slice(from).map((part) => {
      const savepoint = connection.unsafe('savepoint outbox_tenant').execute()
      return Promise.all([savepoint, part.runner.sharedSettle(connection, part, () => [connection.unsafe('release savepoint outbox_tenant').execute()])])
    })
    const settled = await Promise.allSettled(sent)
    const first = settled.findIndex((result) => result.status === 'rejected')
    for (const [index, result] of settled.entries()) if (result.status === 'fulfilled' && (first === -1 || index < first)) dead.set(parts[from + index]!, result.value[1])
    if (first === -1) return
    failed.set(parts[from + first]!, (settled[first] as PromiseRejectedResult).reason)
    await connection.unsafe('rollback to savepoint outbox_tenant; release savepoint outbox_tenant')
    from += first + 1
  }
}
