import type { Sql } from 'postgres'
import type { ClaimedBatch, ClaimQueries } from './claim.js'
import { createdRange, createdWithin } from './created-range.js'
import { type OutboxTable, outboxTable } from '../outbox/outbox-table.js'

/**
 * On a partitioned outbox, the claim reads one partition directly while a backlog lasts there, instead of the
 * whole outbox through its parent table.
 *
 * Why: through the parent, a claim's generic plan locks every partition and the indexes it scans in each, at
 * every execution (PostgreSQL locks all of a cached plan's relations before it prunes any). With the current
 * day's partition, the two ahead and the default, a batch transaction takes more relation locks than the 16 a
 * backend keeps on its fast path (up to PostgreSQL 17; 18 sizes them by max_locks_per_transaction); the rest go
 * through the shared lock table, whose partition locks the replicas contend on. A claim of one partition locks as few relations as a claim of the plain outbox.
 *
 * When: a claim that came back full (the batch size, fresh events last) says more events wait where its last
 * fresh event is. One lookup, sent just before the next BEGIN (no round trip of its own), finds that event's
 * partition, and the claims after it read that partition as long as they come back full. A claim that does not,
 * a sweep of the ClaimFloor (at least every second) and a failed batch go back through the parent, which sees
 * every partition: an event elsewhere (a retry come due, a transaction begun before midnight, a replay) waits at
 * most until then, and a full claim through the parent moves the reading to its partition. A partition detached
 * meanwhile gives nothing (the claim checks it is still attached, see claimQueries).
 */
export class ClaimPartition {
  #enabled = false
  /** The partition the next claims read, and their queries. */
  #reading: { table: OutboxTable; queries: ClaimQueries } | undefined
  /** The event whose partition the next lookup finds. */
  #asked: { id: string; range: [Date, Date] } | undefined
  readonly #lookup: string
  readonly #queriesOf: (partition: OutboxTable) => ClaimQueries

  /** `queriesOf`: the claim queries reading one partition of `outbox`. */
  constructor(outbox: OutboxTable, queriesOf: (partition: OutboxTable) => ClaimQueries) {
    this.#queriesOf = queriesOf
    // Pruned to the one partition that holds the event (its created_at bounds), whichever it is, the default too.
    // Only one this role may read and lock itself: rights on the outbox alone reach its partitions only through
    // it (grant gives them on the partitions too, see grant.ts).
    this.#lookup = `select n.nspname as schema, c.relname as table from pg_class as c join pg_namespace as n on n.oid = c.relnamespace
                     where c.oid = (select tableoid from ${outbox.qualified} where id = $1::bigint and ${createdWithin(2)})
                       and has_table_privilege(c.oid, 'SELECT') and has_table_privilege(c.oid, 'UPDATE')`
  }

  /** The outbox is partitioned and claims are unordered (ordered claims probe every partition anyway). */
  enable(): void {
    this.#enabled = true
  }

  /** The partition the claims read now, if one. */
  get reading(): OutboxTable | undefined {
    return this.#reading?.table
  }

  /** The queries of the next claim: the partition's, or `parent` (the whole outbox) for a sweep or when none is read. */
  queries(parent: ClaimQueries, sweep: boolean): ClaimQueries {
    return sweep || this.#reading === undefined ? parent : this.#reading.queries
  }

  /**
   * Sends the lookup the last claim asked for, if any: before BEGIN, so it rides the claim's round trip. Its
   * failure only leaves the claims on the parent (a lost connection fails the claim after it anyway).
   */
  locate(connection: Sql): Promise<void> | undefined {
    const asked = this.#asked
    if (asked === undefined) return undefined
    this.#asked = undefined
    return connection.unsafe<Array<{ schema: string; table: string }>>(this.#lookup, [asked.id, ...asked.range], { prepare: true }).then(
      ([row]) => {
        if (row === undefined) return
        if (this.#reading?.table.schema !== row.schema || this.#reading.table.table !== row.table) {
          const table = outboxTable(row.schema, row.table)
          this.#reading = { table, queries: this.#queriesOf(table) }
        }
      },
      () => {},
    )
  }

  /** After a claim made with `queries` (batchSize: what it asked for): keep its partition, find another, or go back to the parent. */
  claimed(queries: ClaimQueries, batch: ClaimedBatch, batchSize: number): void {
    if (!this.#enabled) return
    if (batch.events.length < batchSize || batch.firstFreshId === undefined) return this.reset()
    if (queries === this.#reading?.queries) return
    const last = batch.events.at(-1)!
    this.#asked = { id: last.id, range: createdRange([last]) }
  }

  /** Back to the parent: the claim did not fill its batch, or a batch failed (its partition may be gone). */
  reset(): void {
    this.#reading = undefined
    this.#asked = undefined
  }
}
