-- TRUNCATE of a captured table: one <entity>.truncated event per truncated table, written by a statement-level
-- AFTER TRUNCATE trigger in the truncating transaction (a rolled-back TRUNCATE leaves none), so consumers can clear
-- their copy. The row and statement capture functions are not replaced: the truncate trigger has its own function.
-- Names are schema-qualified, operators written OPERATOR(pg_catalog.…), as in 0005.

-- The truncate capture function. TG_ARGV[0] is the entity type. The event names no row: its entity_id is ''. Which
-- table went is in the payload; whether RESTART IDENTITY was given is not (a trigger cannot see it).
CREATE FUNCTION {{schema}}.{{name:_capture_truncate}}() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
AS $fn$
BEGIN
  INSERT INTO {{outbox}} (event_type, entity_type, entity_id, payload, metadata)
  VALUES (TG_ARGV[0] OPERATOR(pg_catalog.||) '.truncated', TG_ARGV[0], '',
          pg_catalog.jsonb_build_object('schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME), {{schema}}.{{name:_event_context}}());
  RETURN NULL;
END
$fn$;

-- Attaches (enabled) or detaches a table's truncate trigger. Statement-level: one event per truncated table
-- however many rows it had; on a partitioned table it fires for a TRUNCATE of the parent, not of one partition.
CREATE FUNCTION {{schema}}.{{name:_capture_truncate_attach}}(target regclass, entity text, enabled boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF enabled THEN
    EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s(%L)',
                   {{capture_trigger}} || '_stmt_t', target, {{qualified_literal:_capture_truncate}}, entity);
  ELSE
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', {{capture_trigger}} || '_stmt_t', target);
  END IF;
END
$fn$;

-- As in 0005, with 'truncate' among the events, and in the default: a capture takes every change unless told
-- otherwise. At least one row event is still needed (the table's options live on its row or statement triggers).
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_capture_table}}(
  target regclass, entity text, key_column text,
  ignored_columns text[] DEFAULT '{}', columns text[] DEFAULT '{}', excluded_columns text[] DEFAULT '{}',
  soft_delete_column text DEFAULT NULL, events text[] DEFAULT '{insert,update,delete,truncate}', mode text DEFAULT 'auto')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  missing text;
  number_of text := 'SELECT array_agg(a.attnum ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = $1 AND a.attname = ANY ($2) AND a.attnum > 0 AND NOT a.attisdropped';
  ignored int2[];
  captured int2[];
  excluded int2[];
  key_attnum int2[];
  soft_delete int2[];
  partitioned boolean := (SELECT c.relkind = 'p' OR c.relispartition OR EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid OR i.inhrelid = c.oid)
                            FROM pg_class c WHERE c.oid = target);
BEGIN
  IF entity IS NULL OR entity = '' THEN
    RAISE EXCEPTION 'entity must not be empty' USING ERRCODE = '22023';
  END IF;
  IF mode IS NULL OR mode NOT IN ('row', 'statement', 'auto') THEN
    RAISE EXCEPTION 'mode must be row, statement or auto (got %)', mode USING ERRCODE = '22023';
  END IF;
  IF mode = 'statement' AND partitioned THEN
    RAISE EXCEPTION 'table % is partitioned or inherited: capture it by row (--mode row), since a statement trigger never sees the writes made directly to a partition or child', target
      USING ERRCODE = '0A000';
  END IF;
  mode := CASE WHEN mode = 'auto' THEN CASE WHEN partitioned THEN 'row' ELSE 'statement' END ELSE mode END;
  SELECT string_agg(quote_ident(c), ', ') INTO missing
    FROM unnest(ARRAY[key_column] || ignored_columns || columns || excluded_columns || CASE WHEN soft_delete_column IS NULL THEN '{}'::text[] ELSE ARRAY[soft_delete_column] END) AS c
   WHERE NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = target AND attname = c AND attnum > 0 AND NOT attisdropped);
  IF missing IS NOT NULL THEN
    RAISE EXCEPTION 'table % has no column %', target, missing USING ERRCODE = '42703';
  END IF;
  IF events IS NULL OR NOT events <@ '{insert,update,delete,truncate}'::text[] OR NOT events && '{insert,update,delete}'::text[] THEN
    RAISE EXCEPTION 'events must be a subset of insert, update, delete, truncate with at least one of insert, update, delete (got %)', events USING ERRCODE = '22023';
  END IF;
  EXECUTE number_of INTO key_attnum USING target, ARRAY[key_column];
  EXECUTE number_of INTO ignored USING target, ignored_columns;
  EXECUTE number_of INTO captured USING target, columns;
  EXECUTE number_of INTO excluded USING target, excluded_columns;
  EXECUTE number_of INTO soft_delete USING target, ARRAY[soft_delete_column];
  -- the row events' triggers and the registry row (which records every event, truncate too)
  PERFORM {{schema}}.{{name:_capture_attach}}(target, entity, key_attnum[1], key_column, coalesce(ignored, '{}'),
    CASE WHEN cardinality(columns) > 0 THEN captured END, coalesce(excluded, '{}'), coalesce(excluded_columns, '{}'), soft_delete[1], events, mode);
  PERFORM {{schema}}.{{name:_capture_truncate_attach}}(target, entity, 'truncate' = ANY (events));
END
$fn$;

-- As in 0005, with the truncate trigger.
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_uncapture_table}}(target regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  suffix text;
BEGIN
  FOREACH suffix IN ARRAY ARRAY['', '_update', '_stmt_i', '_stmt_u', '_stmt_d', '_stmt_t'] LOOP
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', {{capture_trigger}} || suffix, target);
  END LOOP;
  DELETE FROM {{schema}}.{{name:_captured}} AS r
   USING pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = target AND (r.relid = target OR (r.table_schema, r.table_name) = (n.nspname, c.relname));
END
$fn$;

REVOKE ALL ON FUNCTION {{schema}}.{{name:_capture_truncate}}() FROM PUBLIC;
REVOKE ALL ON FUNCTION {{schema}}.{{name:_capture_truncate_attach}}(regclass, text, boolean) FROM PUBLIC;

-- Tables captured before with every row event (the default then: "capture every change") get the truncate trigger
-- now, as a capture made today would; tables captured with an events subset keep exactly that subset. A table whose
-- capture is lost (dropped, stripped of its triggers) gets no trigger, but its registry row the event, so that
-- capturing it again as the lost-capture report says renews it as the others are now.
DO $truncate$
DECLARE
  captured record;
BEGIN
  FOR captured IN
    SELECT r.relid, r.entity FROM {{schema}}.{{name:_captured}} AS r
     WHERE r.options -> 'events' @> '["insert", "update", "delete"]'
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = r.relid AND t.tgparentid = 0
                      AND t.tgfoid IN ({{capture_function}}::pg_catalog.regproc, {{qualified_literal:_capture_rows}}::pg_catalog.regproc))
  LOOP
    PERFORM {{schema}}.{{name:_capture_truncate_attach}}(captured.relid::regclass, captured.entity, true);
  END LOOP;
  UPDATE {{schema}}.{{name:_captured}} SET options = jsonb_set(options, '{events}', (options -> 'events') || '"truncate"')
   WHERE options -> 'events' @> '["insert", "update", "delete"]';
END
$truncate$;
