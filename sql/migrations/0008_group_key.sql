-- Ordering by a group key: a capture may name a group column (`capture order_lines --entity order_line
-- --group-by order_id`), whose value every event of that table carries in the outbox's new group_key column, and
-- `--ordering group` pollers order by it. Names stay schema-qualified, operators written OPERATOR(pg_catalog.…),
-- as in 0005.

-- NULL: the event has no group (its capture names none, the row's group column is NULL, an explicit event gave
-- none). Adding a nullable column without a default rewrites nothing.
ALTER TABLE {{outbox}} ADD COLUMN group_key text;

-- The row capture function, as in 0005, with one more trigger argument: 9 the group column's number ('': none).
-- Triggers attached before this migration have no argument 9 (TG_ARGV[9] is NULL): they keep working unchanged,
-- their events without a group. The group is the column's value as text (->>), rendered canonically as the payload
-- is; it follows RENAME COLUMN like the other options, and a dropped group column leaves the events without one.
-- A capture without a group pays one test of the argument and a NULL column.
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_capture}}() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
AS $fn$
DECLARE
  entity      pg_catalog.text := TG_ARGV[0];
  rel         pg_catalog.oid := TG_ARGV[1];
  key         pg_catalog.text;
  ignored     pg_catalog.text[]; -- NULL: the option is not in use
  columns     pg_catalog.text[];
  excluded    pg_catalog.text[];
  soft_delete pg_catalog.text;
  session     pg_catalog.text[];
  new_row     pg_catalog.jsonb;
  old_row     pg_catalog.jsonb;
  entity_id   pg_catalog.text;
  event_type  pg_catalog.text;
  group_by    pg_catalog.text; -- the group column's current name; NULL: no group (or its column was dropped)
BEGIN
  IF rel OPERATOR(pg_catalog.<>) TG_RELID THEN
    -- a partition (its numbers may differ from the captured parent's, its names do not), or a table restored
    -- from a dump (a new oid: its own numbers)
    rel := CASE WHEN rel OPERATOR(pg_catalog.=) ANY (SELECT relid FROM pg_catalog.pg_partition_ancestors(TG_RELID)) THEN rel ELSE TG_RELID END;
  END IF;
  key := {{schema}}.{{name:_column_name}}(rel, TG_ARGV[2]::pg_catalog.int2);
  IF key IS NULL THEN
    PERFORM {{schema}}.{{name:_key_dropped}}(rel, entity, TG_ARGV[3]);
  END IF;
  -- A plain expression, not part of the inserts: there its set-up would be paid on every call. TG_ARGV[9] is NULL,
  -- not '', for a trigger attached before this migration.
  IF TG_ARGV[9] OPERATOR(pg_catalog.<>) '' THEN
    group_by := {{schema}}.{{name:_column_name}}(rel, TG_ARGV[9]::pg_catalog.int2);
  END IF;
  IF {{schema}}.{{name:_settings_differ}}() THEN
    session := {{schema}}.{{name:_canonical_settings}}();
  END IF;
  BEGIN
    -- a subtransaction without a transaction id (it writes nothing); NEW or OLD is NULL where it does not apply
    new_row := pg_catalog.to_jsonb(NEW);
    old_row := pg_catalog.to_jsonb(OLD);
  EXCEPTION WHEN untranslatable_character OR numeric_value_out_of_range OR program_limit_exceeded THEN
    IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN new_row := {{schema}}.{{name:_row_jsonb}}(NEW); END IF;
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN old_row := {{schema}}.{{name:_row_jsonb}}(OLD); END IF;
  END;
  IF session IS NOT NULL THEN
    session := {{schema}}.{{name:_canonical_settings}}(session);
  END IF;
  IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' AND TG_ARGV[5] OPERATOR(pg_catalog.=) '' AND TG_ARGV[7] OPERATOR(pg_catalog.=) '{}' THEN
    -- the common insert: no column option applies
    INSERT INTO {{outbox}} (event_type, entity_type, entity_id, group_key, payload, metadata)
    VALUES (entity OPERATOR(pg_catalog.||) '.created', entity, new_row OPERATOR(pg_catalog.->>) key, new_row OPERATOR(pg_catalog.->>) group_by,
            pg_catalog.jsonb_build_object('data', new_row), {{schema}}.{{name:_event_context}}());
    RETURN NULL;
  END IF;
  IF TG_ARGV[4] OPERATOR(pg_catalog.<>) '{}' OR TG_ARGV[5] OPERATOR(pg_catalog.<>) '' OR TG_ARGV[7] OPERATOR(pg_catalog.<>) '{}' OR TG_ARGV[8] OPERATOR(pg_catalog.<>) '' THEN
    SELECT o.ignored, o.columns, o.excluded, o.soft_delete INTO ignored, columns, excluded, soft_delete
      FROM {{schema}}.{{name:_capture_options}}(rel, TG_ARGV) AS o;
  END IF;
  event_type := CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN '.created' WHEN TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN '.deleted' ELSE '.updated' END;
  IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' AND soft_delete IS NOT NULL THEN
    IF pg_catalog.jsonb_typeof(old_row OPERATOR(pg_catalog.->) soft_delete) OPERATOR(pg_catalog.=) 'null' AND pg_catalog.jsonb_typeof(new_row OPERATOR(pg_catalog.->) soft_delete) OPERATOR(pg_catalog.<>) 'null' THEN
      event_type := '.deleted';
    ELSIF pg_catalog.jsonb_typeof(old_row OPERATOR(pg_catalog.->) soft_delete) OPERATOR(pg_catalog.<>) 'null' AND pg_catalog.jsonb_typeof(new_row OPERATOR(pg_catalog.->) soft_delete) OPERATOR(pg_catalog.=) 'null' THEN
      event_type := '.restored';
    END IF;
  END IF;
  -- the entity id from the whole row, before any column is filtered out
  entity_id := CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN old_row ELSE new_row END OPERATOR(pg_catalog.->>) key;
  -- Only the captured columns, never the excluded ones, leave the database.
  IF columns IS NOT NULL THEN
    new_row := (SELECT coalesce(pg_catalog.jsonb_object_agg(c.key, c.value), '{}') FROM pg_catalog.jsonb_each(new_row) AS c WHERE c.key OPERATOR(pg_catalog.=) ANY (columns));
    old_row := (SELECT coalesce(pg_catalog.jsonb_object_agg(c.key, c.value), '{}') FROM pg_catalog.jsonb_each(old_row) AS c WHERE c.key OPERATOR(pg_catalog.=) ANY (columns));
  END IF;
  IF excluded IS NOT NULL THEN
    new_row := new_row OPERATOR(pg_catalog.-) excluded;
    old_row := old_row OPERATOR(pg_catalog.-) excluded;
  END IF;
  IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
    -- One jsonb diff, in the insert itself: the old values of the columns that changed, with their JSON types
    -- kept. A column is in both rows (the same table), so = on jsonb, never NULL, says whether it changed.
    INSERT INTO {{outbox}} (event_type, entity_type, entity_id, group_key, payload, metadata)
    SELECT entity OPERATOR(pg_catalog.||) event_type, entity, entity_id, new_row OPERATOR(pg_catalog.->>) group_by,
           pg_catalog.jsonb_build_object('data', new_row, 'previous_attributes', d.changed), {{schema}}.{{name:_event_context}}()
      FROM (SELECT pg_catalog.jsonb_object_agg(o.key, o.value) AS changed FROM pg_catalog.jsonb_each(old_row) AS o
             WHERE NOT coalesce(o.value OPERATOR(pg_catalog.=) (new_row OPERATOR(pg_catalog.->) o.key), false)
               AND NOT coalesce(o.key OPERATOR(pg_catalog.=) ANY (ignored), false)) AS d
     WHERE d.changed IS NOT NULL; -- nothing captured changed, or only ignored columns: no event
    RETURN NULL;
  END IF;
  -- a delete carries the old row's group, an update the new row's (the group column is among the captured columns
  -- and never excluded, see {{name:_capture_attach}}, so the rows still hold it)
  INSERT INTO {{outbox}} (event_type, entity_type, entity_id, group_key, payload, metadata)
  VALUES (entity OPERATOR(pg_catalog.||) event_type, entity, entity_id,
          CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN old_row ELSE new_row END OPERATOR(pg_catalog.->>) group_by,
          pg_catalog.jsonb_build_object('data', CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN old_row ELSE new_row END),
          {{schema}}.{{name:_event_context}}());
  RETURN NULL;
END
$fn$;

-- The statement capture function, as in 0005, with the group of each row (argument 9, as above).
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_capture_rows}}() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
AS $fn$
DECLARE
  entity      pg_catalog.text := TG_ARGV[0];
  rel         pg_catalog.oid := TG_RELID; -- never a partition: partitioned tables are captured by row
  key         pg_catalog.text;
  ignored     pg_catalog.text[]; -- NULL: the option is not in use
  columns     pg_catalog.text[];
  excluded    pg_catalog.text[];
  soft_delete pg_catalog.text;
  session     pg_catalog.text[];
  new_rows_j  pg_catalog.jsonb[];
  old_rows_j  pg_catalog.jsonb[];
  row_type    pg_catalog.text;
  context     pg_catalog.jsonb;
  group_by    pg_catalog.text; -- as in the row function
BEGIN
  key := {{schema}}.{{name:_column_name}}(rel, TG_ARGV[2]::pg_catalog.int2);
  IF key IS NULL THEN
    PERFORM {{schema}}.{{name:_key_dropped}}(rel, entity, TG_ARGV[3]);
  END IF;
  IF TG_ARGV[9] OPERATOR(pg_catalog.<>) '' THEN
    group_by := {{schema}}.{{name:_column_name}}(rel, TG_ARGV[9]::pg_catalog.int2);
  END IF;
  IF {{schema}}.{{name:_settings_differ}}() THEN
    session := {{schema}}.{{name:_canonical_settings}}();
  END IF;
  BEGIN
    -- arrays keep the transition tables' order; a subtransaction without a transaction id (it writes nothing).
    -- n.* and o.*: the whole row even when the table has a column named n or o (a bare n would be that column)
    IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN new_rows_j := ARRAY(SELECT pg_catalog.to_jsonb(n.*) FROM new_rows AS n); END IF;
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN old_rows_j := ARRAY(SELECT pg_catalog.to_jsonb(o.*) FROM old_rows AS o); END IF;
  EXCEPTION WHEN untranslatable_character OR numeric_value_out_of_range OR program_limit_exceeded THEN
    -- transition rows are anonymous records: cast to the table's row type, whose columns _row_jsonb reads by name
    row_type := (SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace WHERE c.oid OPERATOR(pg_catalog.=) rel);
    IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN
      EXECUTE pg_catalog.format('SELECT ARRAY(SELECT %s((n.*)::%s) FROM new_rows AS n)', {{qualified_literal:_row_jsonb}}, row_type) INTO new_rows_j;
    END IF;
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
      EXECUTE pg_catalog.format('SELECT ARRAY(SELECT %s((o.*)::%s) FROM old_rows AS o)', {{qualified_literal:_row_jsonb}}, row_type) INTO old_rows_j;
    END IF;
  END;
  IF session IS NOT NULL THEN
    session := {{schema}}.{{name:_canonical_settings}}(session);
  END IF;
  IF pg_catalog.cardinality(coalesce(new_rows_j, old_rows_j)) OPERATOR(pg_catalog.=) 0 THEN
    RETURN NULL; -- no row: no insert, so no wake-up either
  END IF;
  context := {{schema}}.{{name:_event_context}}();
  IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' AND TG_ARGV[5] OPERATOR(pg_catalog.=) '' AND TG_ARGV[7] OPERATOR(pg_catalog.=) '{}' THEN
    -- the common insert: no column option applies
    INSERT INTO {{outbox}} (event_type, entity_type, entity_id, group_key, payload, metadata)
    SELECT entity OPERATOR(pg_catalog.||) '.created', entity, r.new_row OPERATOR(pg_catalog.->>) key, r.new_row OPERATOR(pg_catalog.->>) group_by,
           pg_catalog.jsonb_build_object('data', r.new_row), context
      FROM pg_catalog.unnest(new_rows_j) AS r(new_row);
    RETURN NULL;
  END IF;
  IF TG_ARGV[4] OPERATOR(pg_catalog.=) '{}' AND TG_ARGV[5] OPERATOR(pg_catalog.=) '' AND TG_ARGV[7] OPERATOR(pg_catalog.=) '{}' AND TG_ARGV[8] OPERATOR(pg_catalog.=) '' THEN
    -- no option in use. Each case is its own short query, so its plan is cached: planning the general query below
    -- costs more than capturing a few rows with it.
    IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
      INSERT INTO {{outbox}} (event_type, entity_type, entity_id, group_key, payload, metadata)
      SELECT entity OPERATOR(pg_catalog.||) '.deleted', entity, r.old_row OPERATOR(pg_catalog.->>) key, r.old_row OPERATOR(pg_catalog.->>) group_by,
             pg_catalog.jsonb_build_object('data', r.old_row), context
        FROM pg_catalog.unnest(old_rows_j) AS r(old_row);
    ELSE
      INSERT INTO {{outbox}} (event_type, entity_type, entity_id, group_key, payload, metadata)
      SELECT entity OPERATOR(pg_catalog.||) '.updated', entity, r.new_row OPERATOR(pg_catalog.->>) key, r.new_row OPERATOR(pg_catalog.->>) group_by,
             pg_catalog.jsonb_build_object('data', r.new_row, 'previous_attributes', d.changed), context
        FROM ROWS FROM (pg_catalog.unnest(old_rows_j), pg_catalog.unnest(new_rows_j)) AS r(old_row, new_row)
       CROSS JOIN LATERAL (
             SELECT pg_catalog.jsonb_object_agg(o.key, o.value) AS changed FROM pg_catalog.jsonb_each(r.old_row) AS o
              WHERE NOT coalesce(o.value OPERATOR(pg_catalog.=) (r.new_row OPERATOR(pg_catalog.->) o.key), false)) AS d
       WHERE d.changed IS NOT NULL; -- an update that changed nothing emits nothing
    END IF;
    RETURN NULL;
  END IF;
  SELECT o.ignored, o.columns, o.excluded, o.soft_delete INTO ignored, columns, excluded, soft_delete
    FROM {{schema}}.{{name:_capture_options}}(rel, TG_ARGV) AS o;
  INSERT INTO {{outbox}} (event_type, entity_type, entity_id, group_key, payload, metadata)
  SELECT entity OPERATOR(pg_catalog.||) e.event_type, entity, e.entity_id, e.group_key,
         CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN pg_catalog.jsonb_build_object('data', f.new_row, 'previous_attributes', d.changed)
              WHEN TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN pg_catalog.jsonb_build_object('data', f.old_row)
                    ELSE pg_catalog.jsonb_build_object('data', f.new_row) END,
         context
    FROM ROWS FROM (pg_catalog.unnest(old_rows_j), pg_catalog.unnest(new_rows_j)) AS r(old_row, new_row)
   CROSS JOIN LATERAL (
         -- the event type, entity id and group from the whole rows, before any column is filtered out
         SELECT CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN '.created' WHEN TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN '.deleted'
                     WHEN soft_delete IS NULL THEN '.updated'
                     WHEN pg_catalog.jsonb_typeof(r.old_row OPERATOR(pg_catalog.->) soft_delete) OPERATOR(pg_catalog.=) 'null' AND pg_catalog.jsonb_typeof(r.new_row OPERATOR(pg_catalog.->) soft_delete) OPERATOR(pg_catalog.<>) 'null' THEN '.deleted'
                     WHEN pg_catalog.jsonb_typeof(r.old_row OPERATOR(pg_catalog.->) soft_delete) OPERATOR(pg_catalog.<>) 'null' AND pg_catalog.jsonb_typeof(r.new_row OPERATOR(pg_catalog.->) soft_delete) OPERATOR(pg_catalog.=) 'null' THEN '.restored'
                     ELSE '.updated' END AS event_type,
                CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN r.old_row ELSE r.new_row END OPERATOR(pg_catalog.->>) key AS entity_id,
                CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN r.old_row ELSE r.new_row END OPERATOR(pg_catalog.->>) group_by AS group_key) AS e
   CROSS JOIN LATERAL (
         -- only the captured columns, never the excluded ones, leave the database
         SELECT CASE WHEN columns IS NULL THEN r.new_row
                     ELSE (SELECT coalesce(pg_catalog.jsonb_object_agg(c.key, c.value), '{}') FROM pg_catalog.jsonb_each(r.new_row) AS c WHERE c.key OPERATOR(pg_catalog.=) ANY (columns)) END
                OPERATOR(pg_catalog.-) coalesce(excluded, '{}') AS new_row,
                CASE WHEN columns IS NULL THEN r.old_row
                     ELSE (SELECT coalesce(pg_catalog.jsonb_object_agg(c.key, c.value), '{}') FROM pg_catalog.jsonb_each(r.old_row) AS c WHERE c.key OPERATOR(pg_catalog.=) ANY (columns)) END
                OPERATOR(pg_catalog.-) coalesce(excluded, '{}') AS old_row) AS f
   CROSS JOIN LATERAL (
         SELECT pg_catalog.jsonb_object_agg(o.key, o.value) AS changed FROM pg_catalog.jsonb_each(f.old_row) AS o
          WHERE TG_OP OPERATOR(pg_catalog.=) 'UPDATE'
            AND NOT coalesce(o.value OPERATOR(pg_catalog.=) (f.new_row OPERATOR(pg_catalog.->) o.key), false)
            AND NOT coalesce(o.key OPERATOR(pg_catalog.=) ANY (ignored), false)) AS d
   WHERE TG_OP OPERATOR(pg_catalog.<>) 'UPDATE' OR d.changed IS NOT NULL; -- an update of nothing captured emits nothing
  RETURN NULL;
END
$fn$;

-- Writes a table's capture triggers and its registry row, as in 0005, with the group column's number as trigger
-- argument 9 and its name in the registry's options ("group_by": null when none). The group column is captured
-- whatever --columns says, as the key is, so the capture functions read it from the row they send.
DROP FUNCTION {{schema}}.{{name:_capture_attach}}(regclass, text, int2, text, int2[], int2[], int2[], text[], int2, text[], text);
CREATE FUNCTION {{schema}}.{{name:_capture_attach}}(
  target regclass, entity text, key_attnum int2, key_name text, ignored int2[], columns int2[], excluded int2[],
  excluded_names text[], soft_delete int2, events text[], mode text, group_attnum int2)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  capture_trigger text := {{capture_trigger}};
  names text[];
  args text;
  row_events text;
  event text;
BEGIN
  IF columns IS NOT NULL THEN
    -- the entity id and the group always travel with the row
    columns := ARRAY(SELECT DISTINCT c FROM unnest(columns || key_attnum || group_attnum) AS c WHERE c IS NOT NULL ORDER BY c);
  END IF;
  args := format('%L, %L, %L, %L, %L, %L, %L, %L, %L, %L', entity, target::oid, coalesce(key_attnum, 0), key_name, ignored,
                 coalesce(columns::text, ''), excluded, excluded_names, coalesce(soft_delete::text, ''), coalesce(group_attnum::text, ''));
  row_events := array_to_string(ARRAY(SELECT upper(e) FROM unnest(events) AS e WHERE e IN ('insert', 'delete') ORDER BY 1 DESC), ' OR ');
  IF row_events <> '' AND mode = 'row' THEN
    EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s FOR EACH ROW EXECUTE FUNCTION %s(%s)',
                   capture_trigger, row_events, target, {{capture_function}}, args);
  ELSE
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', capture_trigger, target);
  END IF;
  IF 'update' = ANY (events) AND mode = 'row' THEN
    -- *<> compares the row images byte by byte, so it works for every column type (json, xml and point have no
    -- equality operator for IS DISTINCT FROM)
    EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER UPDATE ON %s FOR EACH ROW WHEN (OLD.* *<> NEW.*) EXECUTE FUNCTION %s(%s)',
                   capture_trigger || '_update', target, {{capture_function}}, args);
  ELSE
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', capture_trigger || '_update', target);
  END IF;
  -- transition tables allow one event per trigger
  FOREACH event IN ARRAY ARRAY['insert', 'update', 'delete'] LOOP
    IF event = ANY (events) AND mode = 'statement' THEN
      EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)',
                     capture_trigger || '_stmt_' || left(event, 1), upper(event), target,
                     CASE event WHEN 'insert' THEN 'NEW TABLE AS new_rows' WHEN 'update' THEN 'OLD TABLE AS old_rows NEW TABLE AS new_rows' ELSE 'OLD TABLE AS old_rows' END,
                     {{qualified_literal:_capture_rows}}, args);
    ELSE
      EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', capture_trigger || '_stmt_' || left(event, 1), target);
    END IF;
  END LOOP;
  DELETE FROM {{schema}}.{{name:_captured}} AS r
   USING pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = target AND (r.relid = target OR (r.table_schema, r.table_name) = (n.nspname, c.relname));
  SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO names FROM pg_attribute a WHERE a.attrelid = target AND a.attnum = ANY (columns);
  INSERT INTO {{schema}}.{{name:_captured}} (relid, table_schema, table_name, entity, options)
  SELECT target, n.nspname, c.relname, entity, jsonb_build_object(
           'key', key_name,
           'key_attnum', key_attnum,
           'ignore_columns', ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = target AND a.attnum = ANY (ignored) ORDER BY a.attnum),
           'columns', names,
           'exclude_columns', excluded_names,
           'soft_delete_column', (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = target AND a.attnum = soft_delete),
           'events', events,
           'mode', mode,
           'group_by', (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = target AND a.attnum = group_attnum))
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = target;
END
$fn$;

-- Attaches the capture to a table, as in 0007 (TRUNCATE among the events), and names its group column (group_column, default none), e.g.
-- SELECT public.outbox_capture_table('order_lines', 'order_line', 'id', group_column => 'order_id').
DROP FUNCTION {{schema}}.{{name:_capture_table}}(regclass, text, text, text[], text[], text[], text, text[], text);
CREATE FUNCTION {{schema}}.{{name:_capture_table}}(
  target regclass, entity text, key_column text,
  ignored_columns text[] DEFAULT '{}', columns text[] DEFAULT '{}', excluded_columns text[] DEFAULT '{}',
  soft_delete_column text DEFAULT NULL, events text[] DEFAULT '{insert,update,delete,truncate}', mode text DEFAULT 'auto',
  group_column text DEFAULT NULL)
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
  group_attnum int2[];
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
    FROM unnest(ARRAY[key_column] || ignored_columns || columns || excluded_columns || CASE WHEN soft_delete_column IS NULL THEN '{}'::text[] ELSE ARRAY[soft_delete_column] END
                || CASE WHEN group_column IS NULL THEN '{}'::text[] ELSE ARRAY[group_column] END) AS c
   WHERE NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = target AND attname = c AND attnum > 0 AND NOT attisdropped);
  IF missing IS NOT NULL THEN
    RAISE EXCEPTION 'table % has no column %', target, missing USING ERRCODE = '42703';
  END IF;
  IF group_column = ANY (excluded_columns) THEN
    RAISE EXCEPTION 'the group column % cannot be excluded: every event carries its value as group_key', quote_ident(group_column) USING ERRCODE = '22023';
  END IF;
  IF events IS NULL OR NOT events <@ '{insert,update,delete,truncate}'::text[] OR NOT events && '{insert,update,delete}'::text[] THEN
    RAISE EXCEPTION 'events must be a subset of insert, update, delete, truncate with at least one of insert, update, delete (got %)', events USING ERRCODE = '22023';
  END IF;
  EXECUTE number_of INTO key_attnum USING target, ARRAY[key_column];
  EXECUTE number_of INTO ignored USING target, ignored_columns;
  EXECUTE number_of INTO captured USING target, columns;
  EXECUTE number_of INTO excluded USING target, excluded_columns;
  EXECUTE number_of INTO soft_delete USING target, ARRAY[soft_delete_column];
  EXECUTE number_of INTO group_attnum USING target, ARRAY[group_column];
  PERFORM {{schema}}.{{name:_capture_attach}}(target, entity, key_attnum[1], key_column, coalesce(ignored, '{}'),
    CASE WHEN cardinality(columns) > 0 THEN captured END, coalesce(excluded, '{}'), coalesce(excluded_columns, '{}'), soft_delete[1], events, mode, group_attnum[1]);
  PERFORM {{schema}}.{{name:_capture_truncate_attach}}(target, entity, 'truncate' = ANY (events));
END
$fn$;

REVOKE ALL ON FUNCTION {{schema}}.{{name:_capture_attach}}(regclass, text, int2, text, int2[], int2[], int2[], text[], int2, text[], text, int2) FROM PUBLIC;
REVOKE ALL ON FUNCTION {{schema}}.{{name:_capture_table}}(regclass, text, text, text[], text[], text[], text, text[], text, text) FROM PUBLIC;

-- An explicit event with a group. A new function beside the five-argument one, which stays as it was (events
-- without a group), so the roles granted EXECUTE on it keep their grant and their calls; no default here, so a
-- call with five arguments is never ambiguous.
CREATE FUNCTION {{schema}}.{{name:_emit}}(event_type text, entity_type text, entity_id text, payload jsonb, metadata jsonb, group_key text)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  new_id uuid;
BEGIN
  IF coalesce(event_type, '') = '' OR coalesce(entity_type, '') = '' OR entity_id IS NULL THEN
    RAISE EXCEPTION 'event_type, entity_type and entity_id are required' USING ERRCODE = '22023';
  END IF;
  IF metadata IS NOT NULL AND jsonb_typeof(metadata) <> 'object' THEN
    RAISE EXCEPTION 'metadata must be a JSON object (got %)', left(metadata::text, 100) USING ERRCODE = '22023';
  END IF;
  INSERT INTO {{outbox}} (event_type, entity_type, entity_id, group_key, payload, metadata)
  VALUES (event_type, entity_type, entity_id, group_key, coalesce(payload, '{}'::jsonb), coalesce(metadata, '{}'::jsonb) || {{schema}}.{{name:_event_context}}())
  RETURNING event_id INTO new_id;
  RETURN new_id;
END
$fn$;
REVOKE ALL ON FUNCTION {{schema}}.{{name:_emit}}(text, text, text, jsonb, jsonb, text) FROM PUBLIC;

-- The roles that may call the five-argument emit may call this one.
DO $grants$
DECLARE
  grantee name;
BEGIN
  FOR grantee IN
    SELECT r.rolname FROM pg_proc p CROSS JOIN LATERAL aclexplode(p.proacl) AS a JOIN pg_roles r ON r.oid = a.grantee
     WHERE p.oid = ({{qualified_literal:_emit}} || '(text, text, text, jsonb, jsonb)')::regprocedure AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
  LOOP
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s(text, text, text, jsonb, jsonb, text) TO %I', {{qualified_literal:_emit}}, grantee);
  END LOOP;
END
$grants$;
