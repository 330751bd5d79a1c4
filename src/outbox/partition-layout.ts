import type { Sql, TransactionSql } from 'postgres'
import { ConfigError } from '../errors.js'
import { type OutboxTable, quoteIdent, quoteLiteral } from './outbox-table.js'

/** The width of one partition of a partitioned outbox (range-partitioned on `created_at`, in UTC). */
export type PartitionBy = 'day' | 'hour'

export const partitionByValues: readonly PartitionBy[] = ['day', 'hour']

/** The name of the outbox setting (in `<outbox>_settings`) that records the layout. */
export const partitionBySetting = 'partition_by'

export function parsePartitionBy(value: string | undefined, flag = '--partition-by'): PartitionBy | undefined {
  if (value === undefined) return undefined
  if ((partitionByValues as readonly string[]).includes(value)) return value as PartitionBy
  throw new ConfigError(`${flag} must be day or hour (got ${JSON.stringify(value)})`)
}

/** Where the README explains how to move a plain outbox to a partitioned one. */
export const moveProcedure = 'README, "Partitioned outbox: moving a plain outbox"'

/** The default partition: a row no range partition takes (upkeep stopped for days, a clock far off) lands there, never fails. */
export function defaultPartition(outbox: OutboxTable): string {
  return `${quoteIdent(outbox.schema)}.${quoteIdent(`${outbox.table}_default`)}`
}

/**
 * The outbox's layout: its partition width when it is a partitioned table (as recorded when it was created),
 * `undefined` for a plain table. `sql` may be a transaction.
 */
export async function outboxPartitionBy(sql: Sql, outbox: OutboxTable): Promise<PartitionBy | undefined> {
  if (!(await outboxIsPartitioned(sql, outbox))) return undefined
  const [setting] = await sql.unsafe<Array<{ by: PartitionBy }>>(partitionBySettingQuery(outbox))
  return setting!.by
}

/** Whether the outbox is a partitioned table (false for a plain one, or none). One catalog read. */
export async function outboxIsPartitioned(sql: Sql | TransactionSql, outbox: OutboxTable): Promise<boolean> {
  const [row] = await sql.unsafe<Array<{ kind: string }>>(outboxKindQuery(outbox))
  return row?.kind === 'p'
}

/** One row when the outbox exists: its relkind (`p`: partitioned). */
export function outboxKindQuery(outbox: OutboxTable): string {
  return `select c.relkind as kind from pg_class as c where c.oid = to_regclass(${quoteLiteral(outbox.qualified)})`
}

/**
 * The width of a partitioned outbox (whose settings table exists: it is partitioned at 0003 or later): as
 * recorded, or, should the setting have been deleted, as its range partitions span.
 */
export function partitionBySettingQuery(outbox: OutboxTable): string {
  return `select coalesce((select value from ${outbox.settings} where name = ${quoteLiteral(partitionBySetting)}),
                          (select case when max(b[2]::timestamptz - b[1]::timestamptz) <= interval '1 hour' then 'hour' else 'day' end
                             from pg_inherits as i join pg_class as c on c.oid = i.inhrelid,
                                  regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') as b
                            where i.inhparent = ${quoteLiteral(outbox.qualified)}::regclass),
                          'day') as by`
}

/**
 * The statements that turn the outbox, created plain by the frozen migrations in this same transaction and
 * still empty, into a table range-partitioned on `created_at`: the same columns, defaults, identity and
 * constraints (LIKE), the same indexes and triggers (re-created from their definitions, so whatever later
 * migrations added comes along), a primary key of `(id, created_at)` (PostgreSQL requires the partition key
 * in it; `id` still comes from the identity sequence and is unique in practice), a default partition with the
 * table's storage parameters (a partitioned table holds none), the current period's partition and `ahead` more,
 * and the layout recorded in the settings.
 * One plpgsql block: the catalog reads and the DDL run as one statement.
 */
export function partitionOutboxStatement(outbox: OutboxTable, by: PartitionBy, ahead: number): string {
  const schema = quoteIdent(outbox.schema)
  const stamp = by === 'day' ? 'YYYYMMDD' : 'YYYYMMDDHH24'
  const building = `${schema}.${quoteIdent(`${outbox.table}_partitioned`)}`
  return `DO $outbox_poller_partition$
DECLARE
  definitions text[];
  options text[];
  definition text;
  sequence text;
  storage text;
  start timestamp;
BEGIN
  IF EXISTS (SELECT 1 FROM ${outbox.qualified}) THEN
    RAISE EXCEPTION 'the outbox holds events: only an outbox created by this migrate is partitioned';
  END IF;
  SELECT array_agg(d ORDER BY n) INTO definitions FROM (
    SELECT 1 AS n, pg_get_indexdef(indexrelid) AS d FROM pg_index WHERE indrelid = ${quoteLiteral(outbox.qualified)}::regclass AND NOT indisprimary
    UNION ALL
    SELECT 2, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = ${quoteLiteral(outbox.qualified)}::regclass AND NOT tgisinternal) AS s;
  SELECT reloptions INTO options FROM pg_class WHERE oid = ${quoteLiteral(outbox.qualified)}::regclass;
  CREATE TABLE ${building} (LIKE ${outbox.qualified} INCLUDING ALL EXCLUDING INDEXES) PARTITION BY RANGE (created_at);
  DROP TABLE ${outbox.qualified};
  ALTER TABLE ${building} RENAME TO ${quoteIdent(outbox.table)};
  sequence := pg_get_serial_sequence(${quoteLiteral(outbox.qualified)}, 'id');
  EXECUTE format('ALTER SEQUENCE %s RENAME TO %I', sequence, ${quoteLiteral(`${outbox.table}_id_seq`)});
  ALTER TABLE ${outbox.qualified} ADD CONSTRAINT ${quoteIdent(`${outbox.table}_pkey`)} PRIMARY KEY (id, created_at);
  FOREACH definition IN ARRAY coalesce(definitions, '{}') LOOP
    EXECUTE definition;
  END LOOP;
  storage := CASE WHEN options IS NULL THEN '' ELSE ' WITH (' || array_to_string(options, ', ') || ')' END;
  EXECUTE format('CREATE TABLE %s PARTITION OF %s DEFAULT%s', ${quoteLiteral(defaultPartition(outbox))}, ${quoteLiteral(outbox.qualified)}, storage);
  -- the current period's partition and those ahead, named and bounded as partition-upkeep.ts does (UTC)
  FOR i IN 0..${Math.trunc(ahead)} LOOP
    start := date_trunc(${quoteLiteral(by)}, now() AT TIME ZONE 'UTC') + i * interval ${quoteLiteral(`1 ${by}`)};
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)%s', ${quoteLiteral(outbox.schema)},
                   ${quoteLiteral(`${outbox.table}_p`)} || to_char(start, ${quoteLiteral(stamp)}), ${quoteLiteral(outbox.qualified)},
                   start::text || '+00', (start + interval ${quoteLiteral(`1 ${by}`)})::text || '+00', storage);
  END LOOP;
  INSERT INTO ${outbox.settings} (name, value) VALUES (${quoteLiteral(partitionBySetting)}, ${quoteLiteral(by)});
END
$outbox_poller_partition$`
}
