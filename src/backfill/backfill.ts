import { setTimeout as sleep } from 'node:timers/promises'
import type { ReservedSql, Sql } from 'postgres'
import { type CapturedTable, listCaptures, regclassName, resolveTable } from '../capture/capture.js'
import { ConfigError, SqlState, sqlState } from '../errors.js'
import { type OutboxTable, outboxTable, quoteIdent, quoteLiteral } from '../outbox/outbox-table.js'
import { backfillLockSql, type BackfillProgress, readBackfillProgress, writeBackfillProgress } from './backfill-progress.js'

/** Default rows per chunk (one short transaction each). */
export const defaultBackfillChunkSize = 1000
/** Most rows per chunk: a chunk's rows stay locked FOR SHARE until it commits. */
export const maxBackfillChunkSize = 100_000

export interface BackfillOptions {
  /** The outbox the table is captured into. Default: `public.outbox`. */
  outbox?: OutboxTable
  /** Only the rows matching this SQL condition on the table (run with the caller's rights). Default: every row. */
  where?: string
  /** Rows per chunk, 1-100000. Default: 1000. */
  chunkSize?: number
  /** Most rows written per second, on average. Default: no limit. */
  rate?: number
  /** Continue the backfill of this table that stopped (its condition and event type); an error if there is none. Default: false (but a stopped backfill of the same table and condition resumes anyway). */
  resume?: boolean
  /** Only count the rows it would write. Default: false. */
  dryRun?: boolean
  /** Event type of the events written. Default: `<entity>.snapshot`. */
  eventType?: string
  /** Called after each chunk commits (and once before the first, with no row written yet). */
  onProgress?: (progress: BackfillProgress) => void
  /** Stops after the chunk in hand: the backfill can then be resumed. */
  signal?: AbortSignal
}

export interface BackfillResult {
  progress: BackfillProgress
  /** It continued a backfill that had stopped. */
  resumed: boolean
  /** With `dryRun`: the rows a run would write (from the stopped backfill's key when it would resume). */
  wouldWrite?: number
}

/**
 * Writes one `<entity>.snapshot` event per existing row of a captured table (payload `{ "data": <row> }`, with the
 * capture's column options), in key order, in chunks that are each their own short transaction: keyset
 * pagination on the key, no long snapshot, no long lock. Each chunk locks its rows FOR SHARE before reading
 * them: an update that started first has committed (with a lower event id) and is read; one that comes later
 * waits for the chunk and gets a higher id. So, per entity, the snapshot sits at its place among the changes.
 * Progress is recorded in the outbox's settings table with each chunk; one backfill of a table runs at a time.
 */
export async function backfill(sql: Sql, table: string, options: BackfillOptions = {}): Promise<BackfillResult> {
  const outbox = options.outbox ?? outboxTable('public', 'outbox')
  const chunkSize = options.chunkSize ?? defaultBackfillChunkSize
  if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > maxBackfillChunkSize) throw new ConfigError(`chunkSize must be an integer between 1 and ${maxBackfillChunkSize} (got ${chunkSize})`)
  if (options.rate !== undefined && !(options.rate > 0)) throw new ConfigError(`rate must be a positive number of rows per second (got ${options.rate})`)
  const oid = await resolveTable(sql, table)
  const name = await regclassName(sql, oid)
  const capture = (await listCaptures(sql, outbox)).find((c) => c.table === name)
  if (capture === undefined) throw new ConfigError(`table ${name} is not captured into ${outbox.qualified}: capture it first (outbox-poller capture ${name} --entity <name>), so changes made during the backfill are captured too`)
  // one session for the lock and every chunk: a session lock outlives the chunks' transactions, and dies with the process
  const connection = await sql.reserve()
  let locked = false
  try {
    ;[{ locked }] = (await connection.unsafe(backfillLockSql(outbox, oid, 'lock'))) as unknown as [{ locked: boolean }]
    if (!locked) throw new ConfigError(`a backfill of ${name} is running already (see outbox-poller status); wait for it, or stop it and run this again to resume it`)
    return await runLocked(connection, outbox, capture, oid, { ...options, chunkSize })
  } finally {
    if (locked) await connection.unsafe(backfillLockSql(outbox, oid, 'unlock')).catch(() => {})
    connection.release()
  }
}

async function runLocked(connection: ReservedSql, outbox: OutboxTable, capture: CapturedTable, oid: string, options: BackfillOptions & { chunkSize: number }): Promise<BackfillResult> {
  const stopped = await readBackfillProgress(connection, outbox, capture.table)
  const unfinished = stopped !== undefined && stopped.finishedAt === null ? stopped : undefined
  if (options.resume && unfinished === undefined) throw new ConfigError(`no stopped backfill of ${capture.table} to resume`)
  if (options.resume && options.where !== undefined && options.where !== unfinished!.where) {
    throw new ConfigError(`the stopped backfill of ${capture.table} has the condition ${JSON.stringify(unfinished!.where)}: resume it without --where, or start another without --resume`)
  }
  const where = options.resume ? unfinished!.where : (options.where ?? null)
  const eventType = options.resume ? unfinished!.eventType : (options.eventType ?? `${capture.entity}.snapshot`)
  if (eventType.trim() === '') throw new ConfigError('eventType must not be empty')
  const resumed = unfinished !== undefined && unfinished.where === where && unfinished.eventType === eventType
  const queries = await chunkQueries(connection, outbox, capture, oid, where)
  const from = resumed ? unfinished.lastKey : null
  const remaining = await countRows(connection, queries, from, capture.table)
  const now = new Date().toISOString()
  let progress: BackfillProgress = resumed
    ? { ...unfinished, total: unfinished.rows + remaining, updatedAt: now }
    : { table: capture.table, where, eventType, lastKey: null, rows: 0, total: remaining, startedAt: now, updatedAt: now, finishedAt: null }
  if (options.dryRun) return { progress, resumed, wouldWrite: remaining }
  // recorded before the first chunk, so status shows the backfill from its start
  await writeBackfillProgress(connection, outbox, progress)
  options.onProgress?.(progress)
  const started = performance.now()
  let written = 0
  while (!options.signal?.aborted) {
    const chunk = await inTransaction(connection, async (tx) => {
      await tx.unsafe(`select ${queries.canonicalSettings}()`)
      const after = progress.lastKey === null ? [] : [progress.lastKey]
      const [{ last }] = (await tx.unsafe(progress.lastKey === null ? queries.firstBound : queries.nextBound, [options.chunkSize, ...after])) as unknown as [{ last: string | null }]
      const [row] = last === null ? [{ rows: 0 }] : await tx.unsafe<Array<{ rows: number }>>(progress.lastKey === null ? queries.first : queries.next, [last, eventType, ...after])
      // only a chunk with no row left ends it: a chunk may hold fewer rows than its bound promised (deleted meanwhile)
      const done = last === null
      const next: BackfillProgress = {
        ...progress,
        lastKey: last ?? progress.lastKey,
        rows: progress.rows + row!.rows,
        total: Math.max(progress.total, progress.rows + row!.rows),
        updatedAt: new Date().toISOString(),
        finishedAt: done ? new Date().toISOString() : null,
      }
      await writeBackfillProgress(tx, outbox, next)
      return { next, rows: row!.rows }
    })
    progress = chunk.next
    written += chunk.rows
    options.onProgress?.(progress)
    if (chunk.next.finishedAt !== null) break
    if (options.rate !== undefined) {
      const ahead = (written / options.rate) * 1000 - (performance.now() - started)
      if (ahead > 0) await sleep(ahead, undefined, { signal: options.signal }).catch(() => {})
    }
  }
  return { progress, resumed }
}

/** A transaction on the reserved session (which holds the lock): BEGIN, the work, COMMIT, or ROLLBACK on an error. */
async function inTransaction<T>(connection: ReservedSql, work: (tx: ReservedSql) => Promise<T>): Promise<T> {
  await connection.unsafe('begin')
  try {
    const result = await work(connection)
    await connection.unsafe('commit')
    return result
  } catch (error) {
    await connection.unsafe('rollback').catch(() => {})
    throw error
  }
}

interface ChunkQueries {
  /** The last key of the first chunk: $1 chunk size. */
  firstBound: string
  /** The last key of the chunk after key $2. */
  nextBound: string
  /** The first chunk's rows up to key $1 and their events, of type $2. */
  first: string
  /** The same, after key $3. */
  next: string
  /** The rows left after key $1 (all of them when null). */
  count: string
  canonicalSettings: string
}

/**
 * One chunk, two statements: the bound (the chunk size-th key from the last one; every row sharing it joins the
 * chunk, so a key that is not unique is never cut in two), then the rows up to it locked FOR SHARE in key
 * order and their events, in key order, in one statement. The entity id, group and payload are made as the capture makes them.
 * Rows whose key is NULL have no entity id: they are skipped.
 */
async function chunkQueries(sql: ReservedSql, outbox: OutboxTable, capture: CapturedTable, oid: string, where: string | null): Promise<ChunkQueries> {
  const [column] = await sql<{ type: string }[]>`select format_type(a.atttypid, a.atttypmod) as type from pg_attribute a where a.attrelid = ${oid}::oid and a.attname = ${capture.key} and not a.attisdropped`
  if (column === undefined) throw new ConfigError(`table ${capture.table} has no key column ${capture.key} any more: capture it again with another key`)
  const key = `t.${quoteIdent(capture.key)}`
  const condition = where === null ? 'true' : `(${where})`
  const columns = capture.columns.length === 0 ? 'null' : `array[${capture.columns.map(quoteLiteral).join(', ')}]::text[]`
  const excluded = `array[${capture.excludeColumns.map(quoteLiteral).join(', ')}]::text[]`
  // the group as the capture takes it; only named for a capture with one (older outboxes have no such column)
  const group = capture.groupBy === null ? { column: '', value: '' } : { column: ', group_key', value: `, l.row ->> ${quoteLiteral(capture.groupBy)}` }
  // the bound is its own query, so the chunk's range is known when the chunk is planned (an index range scan)
  const bound = (after: string) => `select max(k)::text as last from (select ${key} as k from ${capture.table} as t where ${after} and ${condition} order by ${key} limit $1) as s`
  const chunk = (after: string) => `
    with locked as materialized (
      select ${key} as k, to_jsonb(t) as row from ${capture.table} as t
       where ${after} and ${key} <= $1::text::${column.type} and ${condition}
       order by ${key}
         for share of t
    ), written as (
      insert into ${outbox.qualified} (event_type, entity_type, entity_id, payload, metadata${group.column})
      select $2, ${quoteLiteral(capture.entity)}, l.row ->> ${quoteLiteral(capture.key)},
             jsonb_build_object('data', case when ${columns} is null then l.row
                                             else (select coalesce(jsonb_object_agg(c.key, c.value), '{}') from jsonb_each(l.row) as c where c.key = any (${columns})) end - ${excluded}),
             ${quoteIdent(outbox.schema)}.${quoteIdent(`${outbox.table}_event_context`)}()${group.value}
        from locked as l order by l.k
      returning 1
    )
    select count(*)::int as rows from written`
  return {
    firstBound: bound(`${key} is not null`),
    nextBound: bound(`${key} > $2::text::${column.type}`),
    first: chunk(`${key} is not null`),
    next: chunk(`${key} > $3::text::${column.type}`),
    count: `select count(*)::int as n from ${capture.table} as t where ${key} is not null and ($1::text is null or ${key} > $1::text::${column.type}) and ${condition}`,
    canonicalSettings: `${quoteIdent(outbox.schema)}.${quoteIdent(`${outbox.table}_canonical_settings`)}`,
  }
}

/** Counts the rows left; a condition PostgreSQL rejects is the caller's mistake, said in one line. */
async function countRows(sql: ReservedSql, queries: ChunkQueries, from: string | null, table: string): Promise<number> {
  try {
    const [row] = await sql.unsafe<Array<{ n: number }>>(queries.count, [from])
    return row!.n
  } catch (error) {
    const state = sqlState(error)
    if (state !== undefined && (state.startsWith('42') || state.startsWith('22')) && state !== SqlState.undefinedTable) {
      throw new ConfigError(`--where is not a condition on ${table}: ${(error as Error).message}`)
    }
    throw error
  }
}
