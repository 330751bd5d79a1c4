import { randomBytes } from 'node:crypto'
import type { Sql } from 'postgres'
import type { ClaimedBatch, ClaimQueries } from './claim.js'
import { createdRange, createdWithin } from './created-range.js'
import { type SettleQueries, settleQueries } from './settle.js'
import { type OutboxTable, outboxTable, quoteLiteral } from '../outbox/outbox-table.js'

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
 *
 * A batch claimed from one partition settles there too: its events are all in it, and a DETACH waits for the batch
 * (it locks the outbox and the partition, which the batch holds); should a DETACH CONCURRENTLY end meanwhile (it
 * waits only for the transactions already holding the outbox when it starts to wait), the rows are still marked
 * where they are. The UPDATE of one table is planned as on the plain outbox, where one through the parent plans
 * and prunes its partitions each time.
 */
export class ClaimPartition {
  #enabled = false
  /** The partition the next claims read; undefined: they go through the parent. */
  #reading: ReadPartition | undefined
  /** The partition last read, kept while the claims go through the parent, so that its statement is used again. */
  #last: ReadPartition | undefined
  /** Counts the partitions read one after another; each one's claim text carries its number (see #read). */
  #generation = 0
  /** Tells this poller's claim texts from any other's a connection may have prepared. */
  readonly #id = randomBytes(4).toString('hex')
  /** The generation whose older statements each connection has deallocated. */
  readonly #cleaned = new WeakMap<Sql, number>()
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

  /** The settlement of a batch claimed with `claimed`: the partition's, if the batch was claimed from the partition read last. */
  settleQueries(claimed: ClaimQueries, parent: SettleQueries): SettleQueries {
    return this.#last !== undefined && claimed === this.#last.queries ? this.#last.settle : parent
  }

  /**
   * Sends, before BEGIN (riding the claim's round trip), the lookup the last claim asked for, and on a connection
   * that has not yet done so since the partition read changed, the deallocation of the earlier partitions'
   * claims. Their failure only leaves the claims on the parent (a lost connection fails the claim after it anyway).
   */
  locate(connection: Sql): Promise<unknown> | undefined {
    const sent: Promise<unknown>[] = []
    if (this.#generation > 0 && this.#cleaned.get(connection) !== this.#generation) {
      this.#cleaned.set(connection, this.#generation)
      sent.push(connection.unsafe(deallocateAllBut(this.#marked())).catch(() => {}))
    }
    const asked = this.#asked
    if (asked !== undefined) {
      this.#asked = undefined
      sent.push(connection.unsafe<Array<{ schema: string; table: string }>>(this.#lookup, [asked.id, ...asked.range], { prepare: true }).then(([row]) => row && this.#read(row), () => {}))
    }
    return sent.length === 0 ? undefined : Promise.all(sent)
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

  /**
   * The claims read `found` from now on: with the statements of the partition read last if it is the same one,
   * else with new claim and settlement texts. A connection never recycles its prepared statements, and each
   * partition's claim is one of its own (half a megabyte of plan on the server): so a new partition's texts carry
   * a new generation, and every connection deallocates the older ones (see locate). Their texts never come back: a
   * partition read again later is prepared again, under its new number.
   */
  #read(found: { schema: string; table: string }): void {
    const last = this.#last
    if (last === undefined || last.table.schema !== found.schema || last.table.table !== found.table) {
      const table = outboxTable(found.schema, found.table)
      const queries = this.#queriesOf(table)
      this.#generation++
      const marked = (text: string) => `${text}\n      ${this.#marked()}`
      const settle = settleQueries(table)
      this.#last = { table, queries: { ...queries, claim: marked(queries.claim) }, settle: { markProcessed: marked(settle.markProcessed), markFailed: marked(settle.markFailed), hold: marked(settle.hold) } }
    }
    this.#reading = this.#last
  }

  #marked(): string {
    return `${marker}${this.#id}.${this.#generation} */`
  }
}

interface ReadPartition {
  table: OutboxTable
  queries: ClaimQueries
  settle: SettleQueries
}

const marker = '/* outbox-poller: statement of one partition, generation '

/** One simple-protocol statement (never itself prepared): deallocates this session's partition statements but those marked `current`. */
function deallocateAllBut(current: string): string {
  return `do $outbox_poller_deallocate$
declare
  name text;
begin
  for name in select p.name from pg_catalog.pg_prepared_statements as p
               where strpos(p.statement, ${quoteLiteral(marker)}) > 0 and strpos(p.statement, ${quoteLiteral(current)}) = 0 loop
    execute format('deallocate %I', name);
  end loop;
end
$outbox_poller_deallocate$`
}
