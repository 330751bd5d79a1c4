import type { Sql, TransactionSql } from 'postgres'

/**
 * What holds back VACUUM in the whole cluster: while an old snapshot, a replication slot's xmin or a
 * prepared transaction lives, no row that died after it can be removed, the outbox's processed rows
 * included. Nothing gets stuck, but every claim steps over the dead index entries, and the pending index
 * stays bloated afterwards.
 */
export interface VacuumHorizon {
  /** The session with the oldest snapshot or transaction id, the caller's own excepted; null when none. */
  oldestSnapshot: SnapshotHolder | null
  /** Replication slots that hold an xmin (a standby with hot_standby_feedback, or a slot nobody reads). */
  slots: Array<{ name: string; active: boolean; xidAge: number }>
  preparedTransactions: Array<{ gid: string; database: string; ageSeconds: number }>
  /**
   * The caller may see every session's snapshot (superuser or pg_read_all_stats). Without it, other roles'
   * sessions show no snapshot, so the oldest one may be missed.
   */
  seesAllSessions: boolean
}

export interface SnapshotHolder {
  pid: number
  user: string | null
  applicationName: string | null
  database: string | null
  /** `active`, `idle in transaction`, …; null for processes that are not client sessions (a walsender). */
  state: string | null
  /** Since its transaction (or, outside one, its query) began; null where the caller may not see it. */
  ageSeconds: number | null
  /** Transactions since its snapshot: how far it holds the horizon back. */
  xidAge: number
}

/**
 * A session holding a snapshot or a transaction id, as `pg_stat_activity` shows it. Not an `idle` one: outside a
 * transaction of its client's, a backend takes a snapshot only for a moment of its own (reading notifications for
 * a LISTEN, catching up with catalog invalidations), and shows the start of that as its last statement's: a
 * poller's LISTEN connection, idle for an hour, looked like a snapshot an hour old (seen in the soak: 212-444 s)
 * while it held nothing back.
 */
export const holdsSnapshot = `(backend_xmin is not null or backend_xid is not null) and state is distinct from 'idle'`

/** Past this age a snapshot or prepared transaction is worth a warning: longer than a poller's own batches take by default (250 s). */
export const horizonWarnAfterSeconds = 300

/** One statement, cheap at any size (it reads the server's process list, never a table). */
export async function vacuumHorizon(sql: Sql | TransactionSql): Promise<VacuumHorizon> {
  const [row] = await sql<HorizonRow[]>`
    select
      (select row_to_json(s) from (
         select pid, usename as "user", application_name as "applicationName", datname as database, state,
                (select case when since is not null then greatest(0, extract(epoch from now() - since)) end
                   from (select coalesce(xact_start, query_start, backend_start) as since) as t)::float8 as "ageSeconds",
                greatest(age(backend_xmin), age(backend_xid)) as "xidAge"
           from pg_stat_activity
          where pid <> pg_backend_pid() and ${sql.unsafe(holdsSnapshot)}
          order by greatest(age(backend_xmin), age(backend_xid)) desc, xact_start
          limit 1) as s) as oldest,
      (select coalesce(json_agg(json_build_object('name', slot_name, 'active', active, 'xidAge', age(xmin)) order by age(xmin) desc), '[]')
         from pg_replication_slots where xmin is not null) as slots,
      (select coalesce(json_agg(json_build_object('gid', gid, 'database', database, 'ageSeconds', extract(epoch from now() - prepared)::float8) order by prepared), '[]')
         from pg_prepared_xacts) as prepared,
      (select rolsuper from pg_roles where rolname = current_user) or pg_has_role(current_user, 'pg_read_all_stats', 'member') as sees_all`
  return { oldestSnapshot: row!.oldest, slots: row!.slots, preparedTransactions: row!.prepared, seesAllSessions: row!.sees_all }
}

/** What deserves a warning, one phrase each, saying what holds the outbox back and how to end it. */
export function horizonWarnings(horizon: VacuumHorizon, warnAfterSeconds = horizonWarnAfterSeconds): string[] {
  const warnings: string[] = []
  const s = horizon.oldestSnapshot
  if (s !== null && s.ageSeconds !== null && s.ageSeconds > warnAfterSeconds) {
    warnings.push(`a snapshot ${Math.round(s.ageSeconds)} s old (pid ${s.pid}, ${describeSession(s)}) holds back VACUUM of the outbox: end it (SELECT pg_terminate_backend(${s.pid}))`)
  }
  for (const slot of horizon.slots) {
    if (!slot.active) warnings.push(`inactive replication slot ${slot.name} holds back VACUUM of the outbox (${slot.xidAge} transactions): drop it or bring its consumer back`)
  }
  for (const prepared of horizon.preparedTransactions) {
    if (prepared.ageSeconds > warnAfterSeconds) warnings.push(`prepared transaction '${prepared.gid}' in ${prepared.database}, ${Math.round(prepared.ageSeconds)} s old, holds back VACUUM of the outbox: COMMIT PREPARED or ROLLBACK PREPARED it`)
  }
  return warnings
}

/** `app "report", user alice, idle in transaction` */
export function describeSession(s: SnapshotHolder): string {
  const parts = [s.applicationName ? `application "${s.applicationName}"` : undefined, s.user ? `user ${s.user}` : undefined, s.database ? `database ${s.database}` : undefined, s.state ?? undefined]
  return parts.filter(Boolean).join(', ') || 'a server process'
}

interface HorizonRow {
  oldest: SnapshotHolder | null
  slots: VacuumHorizon['slots']
  prepared: VacuumHorizon['preparedTransactions']
  sees_all: boolean
}
