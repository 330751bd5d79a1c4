import type { Sql } from 'postgres'
import { applicationName, connect } from '../database/connect.js'
import { errorMessage } from '../errors.js'
import type { OutboxMetrics } from '../observe/metrics.js'
import { outboxTable } from '../outbox/outbox-table.js'
import { outboxChargeCrash } from '../poller/charge-suspects.js'
import { groupTenantEventIds } from '../tenants/tenant-event-id.js'
import type { Logger } from '../types.js'

/**
 * Records a failed attempt against the events a dead worker had in flight and marks them suspect; resolves
 * whether any was charged (a crash charged to events does not count toward the crash limit). Never rejects.
 */
export interface CrashCharge {
  /** `batches`: the ids in flight, by the batch they were claimed in (two with overlapping batches). */
  charge(workerPid: number | undefined, batches: ReadonlyArray<readonly string[]>, error: string): Promise<boolean>
  /** Closes its connection, if it opened one. */
  close(): Promise<void>
}

export interface CrashChargeSetup {
  connectionString: string
  schema: string
  table: string
  maxAttempts: number
  log: Logger
  metrics?: OutboxMetrics
}

/** The charge in the supervisor's own transaction, on a connection opened at the first crash. */
export function databaseCrashCharge(setup: CrashChargeSetup): CrashCharge {
  const outbox = outboxTable(setup.schema, setup.table)
  let sql: Sql | undefined
  return {
    async charge(workerPid, batches, error) {
      if (batches.every((ids) => ids.length === 0)) return false
      sql ??= connect(setup.connectionString, { max: 1, applicationName: applicationName('supervisor') })
      try {
        let charged = 0
        // a multi-tenant worker's ids name their schema: each tenant's rows are charged in its own outbox
        for (const [schema, rows] of batches.flatMap((ids) => [...groupTenantEventIds(ids, setup.schema)])) {
          const result = await outboxChargeCrash(sql, schema === setup.schema ? outbox : outboxTable(schema, setup.table), rows, error, setup.maxAttempts)
          charged += result.charged.length
          const tenant = schema === setup.schema ? {} : { schema }
          if (result.charged.length > 0) setup.log.warn({ worker_pid: workerPid, ...tenant, suspects: result.charged.length }, 'charged the events the dead worker had in flight: they are retried one at a time')
          for (const event of result.dead) {
            setup.log.error({ ...tenant, id: event.id, event_type: event.event_type, error }, 'event dead-lettered: it kept killing the worker')
            setup.metrics?.recordDead(event.event_type, 1, schema)
          }
        }
        return charged > 0
      } catch (cause) {
        setup.log.error({ error: errorMessage(cause) }, 'could not record the crash against its events')
        return false
      }
    },
    async close() {
      await sql?.end({ timeout: 5 })
      sql = undefined
    },
  }
}

/**
 * Crashes not charged to events, within a sliding window: at the limit the supervisor gives up; below it,
 * the count sets the restart's backoff.
 */
export class CrashWindow {
  readonly #times: number[] = []

  constructor(
    readonly limit: number,
    readonly windowMs: number,
  ) {}

  /** Counts a crash at `now`; returns how many lie within the window, this one included. */
  record(now: number): number {
    this.#times.push(now)
    while (this.#times.length > 0 && this.#times[0]! < now - this.windowMs) this.#times.shift()
    return this.#times.length
  }
}
