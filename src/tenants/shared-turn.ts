import type { Sql } from 'postgres'
import { type ClaimQueries, outboxRollback } from '../poller/claim.js'
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

/**
 * One turn for several tenants in one transaction on the claim connection: BEGIN and every tenant's claim go out
 * at once (one round trip), then each tenant's batch is handled as its own (its handlers, `--concurrency`, its
 * announcements to the supervisor, its verdicts), one tenant after another, then every settlement goes out at
 * once, each inside its own savepoint, and one COMMIT. A cold tenant's event costs a share of three round trips
 * instead of three of its own. A settlement that fails (a schema dropped meanwhile) is rolled back to its
 * savepoint, alone: the other tenants' settlements commit, and that tenant's events, not settled, are claimable
 * again, as after a failed batch of its own.
 *
 * Undefined when the claims cannot share the transaction (one failed, or one locked rows past its byte budget,
 * which only a rollback frees): it is rolled back before any handler ran, and the caller gives each tenant a
 * turn of its own. Since a crash of the process rolls back the whole transaction, a tenant's events handled
 * earlier in it are handled again, as a crashed batch's events are: at least once, as always.
 */
export async function sharedTurn(connection: Sql, tenants: readonly TenantOutbox[], statements: Pick<ClaimQueries, 'begin' | 'afterClaim'>, idleInTransactionMs: number, log: Logger): Promise<SharedOutcome[] | undefined> {
  const started = connection.unsafe(statements.begin).execute()
  const claims = tenants.map((tenant) => tenant.runner.sharedClaim(connection, tenant.deferrals))
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
  let running = 0
  const keptAlive: Promise<unknown>[] = []
  try {
    // one tenant's handlers after another's: a handler's ctx.tx() takes its turns on the one connection per batch
    let quietSince = performance.now()
    for (; running < batches.length; running++) {
      await batches[running]!.runner.sharedDispatch(connection, batches[running]!)
      // the transaction's idle timeout bounds one batch's handlers, not several tenants' in a row: a statement
      // now and then (unawaited) keeps it from ending a transaction that is busy
      if (idleInTransactionMs > 0 && performance.now() - quietSince > idleInTransactionMs / 2) {
        const alive = connection.unsafe('select 1').execute()
        alive.catch(() => {}) // awaited after the dispatch: not an unhandled rejection meanwhile
        keptAlive.push(alive)
        quietSince = performance.now()
      }
    }
    await Promise.all(keptAlive)
  } catch (error) {
    await Promise.allSettled(keptAlive)
    // the whole transaction ends: the tenant whose batch stopped recovers as after its own; the others just go again
    await outboxRollback(connection).catch(() => {})
    const forced = tenants.some((tenant) => tenant.runner.forced)
    if (forced) log.warn({ events: batches.reduce((sum, part) => sum + part.rows.length, 0) }, 'forced stop: batch rolled back, its events return to the queue')
    return outcomes((part, index) => (index === running && !forced ? { tenant: tenants[index]!, error: (part.runner.sharedEnd(part, undefined, error), error) } : { tenant: tenants[index]!, result: part.runner.sharedEnd(part, undefined) }))
  }
  const dead = new Map<SharedBatch, ReadonlySet<string>>()
  const failed = new Map<SharedBatch, unknown>()
  try {
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
