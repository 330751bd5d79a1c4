/**
 * When a pending index is bloated: the arithmetic behind cleanup's rebuild (see maintenance.ts), apart from the
 * SQL that measures its inputs.
 *
 * A pending index of a busy outbox may never be as small as a fresh build of its live entries: every event inserts
 * an entry on its rightmost page, dead once the event is processed, and whenever those are not removed as the pages
 * fill (often on PostgreSQL 15, and on any version while the horizon is held back for seconds: measured in the
 * soak) the index grows by every insert until a VACUUM frees the pages they fill; such a page is reused only after
 * the next VACUUM. So the file settles at about two VACUUM intervals' inserts and reuses its pages from then
 * on. A rebuild below that gains nothing: the index is back one or two intervals later, and meanwhile its size is
 * a sawtooth. Bloat is what exceeds it, as after a snapshot held for minutes.
 */

/** Rebuilt when larger than this many times the size its steady state needs… */
export const bloatFactor = 2
/** …and larger than this (bytes): rebuilding a small index gains nothing. */
export const bloatMinBytes = 256 * 1024

/**
 * The size (bytes) of a fresh build of `entries` entries of `keyBytes` each: 90 % full leaves of (tuple header +
 * key, 8-aligned, + line pointer), a metapage and a root.
 */
export function freshIndexBytes(entries: number, keyBytes: number): number {
  return 8192 * (2 + Math.ceil((entries * (12 + 8 * Math.ceil(keyBytes / 8))) / (0.9 * 8160)))
}

/** What the table's statistics say about inserts since its last VACUUM (pg_stat_user_tables). */
export interface InsertChurn {
  /** n_ins_since_vacuum. */
  inserted: number
  /** Seconds since the last VACUUM or autovacuum; undefined: never vacuumed (`inserted` counts from its creation). */
  secondsSinceVacuum: number | undefined
  /** That last one was autovacuum's. */
  autovacuum: boolean
  /** autovacuum_naptime (s): autovacuum comes back to a database no sooner. */
  naptimeSeconds: number
}

/** Below this many seconds since the last VACUUM, its insert count is too short a sample to tell a rate by. */
export const churnRateMinSeconds = 10

/**
 * The entries a pending index that every insert enters must hold between two VACUUMs: those inserted since the last
 * one, or, when that VACUUM came less than autovacuum_naptime ago (an autovacuum shortly before cleanup's), as many
 * as arrive at their rate since then in a naptime. No rate from a VACUUM seconds ago (a burst just before it, or
 * statistics flushed late, would pass for a steady stream): after an autovacuum seconds ago the churn is unknown,
 * Infinity (nothing is rebuilt: the next cleanup weighs it again); after a VACUUM run by hand (by an operator once a
 * snapshot ended), the inserts since.
 */
export function churnEntries(churn: InsertChurn): number {
  if (churn.secondsSinceVacuum === undefined) return churn.inserted
  if (churn.secondsSinceVacuum < churnRateMinSeconds) return churn.autovacuum && churn.inserted > 0 ? Number.POSITIVE_INFINITY : churn.inserted
  return Math.max(churn.inserted, Math.round((churn.inserted / churn.secondsSinceVacuum) * churn.naptimeSeconds))
}

/**
 * The size (bytes) a pending index's steady state needs: a fresh build of its live entries and of the churn it must
 * hold (`churnBytes`, an upper bound: every insert kept until VACUUM), or, where the pages it used just before the
 * last VACUUM are known (`usedBytes`, index-usage.ts), no more than those or the fresh build of its live entries,
 * whichever is larger: when the claims' scans mark dead entries as the pages fill, an interval needs a few pages,
 * not its inserts, and a file grown in a spell when they did not (a horizon held for seconds) is bloated.
 */
export function steadyIndexBytes(churnBytes: number, liveBytes: number, usedBytes: number | undefined): number {
  return usedBytes === undefined ? churnBytes : Math.min(churnBytes, Math.max(usedBytes, liveBytes))
}

/** Bloated: over `bloatMinBytes` and over `bloatFactor` × a fresh build of its live entries and the churn it must hold. */
export function indexBloated(bytes: number, steadyBytes: number): boolean {
  return bytes > bloatMinBytes && bytes > bloatFactor * steadyBytes
}
