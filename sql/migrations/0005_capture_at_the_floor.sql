-- Cheaper capture: no settings save and restore on every call, the event context's common case in one
-- expression, set-based capture of whole statements through transition tables, and the ordering index only on
-- outboxes whose pollers order by entity.
--
-- The trigger functions run as the outbox's owner (SECURITY DEFINER), so application roles need no privilege on
-- the outbox. They no longer pin search_path with a SET clause (a settings save and restore on every call): every
-- name they and their helpers use is schema-qualified instead — tables, functions, types, and operators, written
-- OPERATOR(pg_catalog.=) — so nothing a writing session puts in its search_path can stand in for them.
-- (IS DISTINCT FROM, IN, NULLIF, LIKE and BETWEEN name their operators implicitly: they are not used here.)

-- A column's current name by number; NULL once dropped. Inlined into the capture functions.
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_column_name}}(rel pg_catalog.oid, attnum pg_catalog.int2) RETURNS pg_catalog.text
LANGUAGE sql STABLE
AS $fn$
  SELECT CASE WHEN pg_catalog.has_column_privilege(rel, attnum, 'SELECT') IS NOT NULL -- NULL: no such column (dropped)
              THEN (pg_catalog.pg_identify_object_as_address('pg_catalog.pg_class'::pg_catalog.regclass, rel, attnum)).object_names[3] END
$fn$;

CREATE OR REPLACE FUNCTION {{schema}}.{{name:_metadata_setting}}(setting pg_catalog.text) RETURNS pg_catalog.jsonb
LANGUAGE plpgsql
AS $fn$
DECLARE
  value pg_catalog.jsonb;
BEGIN
  BEGIN
    value := setting::pg_catalog.jsonb;
  EXCEPTION WHEN invalid_text_representation OR untranslatable_character OR numeric_value_out_of_range THEN
    RAISE EXCEPTION 'outbox.metadata must be a JSON object (got %): %', pg_catalog.left(setting, 100), SQLERRM USING ERRCODE = '22023';
  END;
  IF pg_catalog.jsonb_typeof(value) OPERATOR(pg_catalog.<>) 'object' THEN
    RAISE EXCEPTION 'outbox.metadata must be a JSON object (got %)', pg_catalog.left(setting, 100) USING ERRCODE = '22023';
  END IF;
  RETURN value;
END
$fn$;

-- The event context when some outbox.* setting is set (see {{name:_event_context}}).
CREATE FUNCTION {{schema}}.{{name:_event_context_set}}() RETURNS pg_catalog.jsonb
LANGUAGE sql VOLATILE
AS $fn$
  SELECT CASE WHEN pg_catalog.concat(pg_catalog.current_setting('outbox.metadata', true)) OPERATOR(pg_catalog.=) '' THEN '{}'::pg_catalog.jsonb
              ELSE {{schema}}.{{name:_metadata_setting}}(pg_catalog.current_setting('outbox.metadata', true)) END
      OPERATOR(pg_catalog.||) pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
           'correlation_id', CASE WHEN pg_catalog.current_setting('outbox.correlation_id', true) OPERATOR(pg_catalog.<>) '' THEN pg_catalog.current_setting('outbox.correlation_id', true) END,
           'causation_id', CASE WHEN pg_catalog.current_setting('outbox.causation_id', true) OPERATOR(pg_catalog.<>) '' THEN pg_catalog.current_setting('outbox.causation_id', true) END,
           'actor', CASE WHEN pg_catalog.current_setting('outbox.actor', true) OPERATOR(pg_catalog.<>) '' THEN pg_catalog.current_setting('outbox.actor', true) END,
           'txid', pg_catalog.pg_current_xact_id()::pg_catalog.text))
$fn$;

-- The same context as before. Most writes set none of the outbox.* settings: one concat of the four tells, and
-- the context is then just the transaction id. Plain SQL, inlined into its callers.
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_event_context}}() RETURNS pg_catalog.jsonb
LANGUAGE sql VOLATILE
AS $fn$
  SELECT CASE WHEN pg_catalog.concat(pg_catalog.current_setting('outbox.metadata', true), pg_catalog.current_setting('outbox.correlation_id', true),
                                     pg_catalog.current_setting('outbox.causation_id', true), pg_catalog.current_setting('outbox.actor', true)) OPERATOR(pg_catalog.=) ''
              THEN pg_catalog.jsonb_build_object('txid', pg_catalog.pg_current_xact_id()::pg_catalog.text)
              ELSE {{schema}}.{{name:_event_context_set}}() END
$fn$;

CREATE OR REPLACE FUNCTION {{schema}}.{{name:_canonical_settings}}(saved pg_catalog.text[] DEFAULT NULL) RETURNS pg_catalog.text[]
LANGUAGE plpgsql
AS $fn$
DECLARE
  setting pg_catalog.text[];
  changed pg_catalog.text[] := '{}';
  ignored pg_catalog.text;
BEGIN
  IF saved IS NOT NULL THEN
    FOR i IN 1 .. pg_catalog.cardinality(saved) BY 2 LOOP
      ignored := pg_catalog.set_config(saved[i], saved[i OPERATOR(pg_catalog.+) 1], true);
    END LOOP;
    RETURN NULL;
  END IF;
  FOREACH setting SLICE 1 IN ARRAY ARRAY[['TimeZone', 'UTC'], ['DateStyle', 'ISO, MDY'], ['IntervalStyle', 'postgres'],
                                          ['bytea_output', 'hex'], ['extra_float_digits', '1']] LOOP
    IF pg_catalog.current_setting(setting[1]) OPERATOR(pg_catalog.<>) setting[2] THEN
      changed := changed OPERATOR(pg_catalog.||) ARRAY[setting[1], pg_catalog.current_setting(setting[1])];
      ignored := pg_catalog.set_config(setting[1], setting[2], true);
    END IF;
  END LOOP;
  RETURN changed;
END
$fn$;

-- True when the session renders values other than canonically (see {{name:_canonical_settings}}).
CREATE FUNCTION {{schema}}.{{name:_settings_differ}}() RETURNS pg_catalog.bool
LANGUAGE sql STABLE
AS $fn$
  SELECT NOT (pg_catalog.current_setting('TimeZone') OPERATOR(pg_catalog.=) ANY ('{UTC,Etc/UTC,GMT,Etc/GMT}'::pg_catalog.text[]))
      OR NOT (pg_catalog.current_setting('DateStyle') OPERATOR(pg_catalog.~~) 'ISO,%')
      OR pg_catalog.current_setting('IntervalStyle') OPERATOR(pg_catalog.<>) 'postgres'
      OR pg_catalog.current_setting('bytea_output') OPERATOR(pg_catalog.<>) 'hex'
      OR pg_catalog.current_setting('extra_float_digits')::pg_catalog.int4 OPERATOR(pg_catalog.<) 1
$fn$;

CREATE OR REPLACE FUNCTION {{schema}}.{{name:_row_jsonb}}(row_value anyelement) RETURNS pg_catalog.jsonb
LANGUAGE plpgsql
AS $fn$
DECLARE
  result pg_catalog.jsonb := '{}';
  value pg_catalog.jsonb;
  column_name pg_catalog.name;
BEGIN
  FOR column_name IN
    SELECT a.attname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) t.typrelid
     WHERE t.oid OPERATOR(pg_catalog.=) pg_catalog.pg_typeof(row_value) AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped ORDER BY a.attnum
  LOOP
    BEGIN
      EXECUTE pg_catalog.format('SELECT pg_catalog.to_jsonb(($1).%I)', column_name) INTO value USING row_value;
    EXCEPTION WHEN untranslatable_character OR numeric_value_out_of_range OR program_limit_exceeded THEN
      EXECUTE pg_catalog.format('SELECT pg_catalog.to_jsonb(pg_catalog.to_json(($1).%I)::pg_catalog.text)', column_name) INTO value USING row_value;
    END;
    result := result OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(column_name, value);
  END LOOP;
  RETURN result;
END
$fn$;

-- The error of a write to a captured table whose key column was dropped, with the command that fixes it.
CREATE FUNCTION {{schema}}.{{name:_key_dropped}}(rel pg_catalog.oid, entity pg_catalog.text, key_name pg_catalog.text) RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
  target pg_catalog.text := (SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
                               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace WHERE c.oid OPERATOR(pg_catalog.=) rel);
BEGIN
  RAISE EXCEPTION '%', pg_catalog.format('captured table %s has no key column %s any more (dropped): capture it again with another key: outbox-poller capture %s --entity %s --key <column>, or SELECT %s(%L, %L, %L)',
    target, pg_catalog.quote_ident(key_name), target, entity, {{qualified_literal:_capture_table}}, target, entity, '<column>')
    USING ERRCODE = '42703';
END
$fn$;

-- The capture options of a table in use, by current name (trigger arguments 4 to 8, see {{name:_capture}}); NULL
-- where an option is not in use. A dropped column becomes '', a name no column can have.
CREATE FUNCTION {{schema}}.{{name:_capture_options}}(rel pg_catalog.oid, args pg_catalog.text[],
  OUT ignored pg_catalog.text[], OUT columns pg_catalog.text[], OUT excluded pg_catalog.text[], OUT soft_delete pg_catalog.text)
LANGUAGE plpgsql STABLE
AS $fn$
DECLARE
  attnum pg_catalog.int2;
BEGIN
  -- args holds TG_ARGV, which counts from 0
  IF args[4] OPERATOR(pg_catalog.<>) '{}' THEN
    ignored := '{}';
    FOREACH attnum IN ARRAY args[4]::pg_catalog.int2[] LOOP ignored := ignored OPERATOR(pg_catalog.||) coalesce({{schema}}.{{name:_column_name}}(rel, attnum), ''); END LOOP;
  END IF;
  IF args[5] OPERATOR(pg_catalog.<>) '' THEN
    columns := '{}';
    FOREACH attnum IN ARRAY args[5]::pg_catalog.int2[] LOOP columns := columns OPERATOR(pg_catalog.||) coalesce({{schema}}.{{name:_column_name}}(rel, attnum), ''); END LOOP;
  END IF;
  IF args[7] OPERATOR(pg_catalog.<>) '{}' THEN
    excluded := args[7]::pg_catalog.text[];
    FOREACH attnum IN ARRAY args[6]::pg_catalog.int2[] LOOP excluded := excluded OPERATOR(pg_catalog.||) coalesce({{schema}}.{{name:_column_name}}(rel, attnum), ''); END LOOP;
  END IF;
  IF args[8] OPERATOR(pg_catalog.<>) '' THEN
    soft_delete := {{schema}}.{{name:_column_name}}(rel, args[8]::pg_catalog.int2);
  END IF;
END
$fn$;

-- The row capture function: one event per changed row, written by the row's own trigger call. Same trigger
-- arguments as before (0 entity type, 1 the captured table's oid, 2 key column number, 3 key column name,
-- 4 ignored column numbers, 5 captured column numbers ('': all), 6 excluded column numbers, 7 excluded column names,
-- 8 soft-delete column number ('': none)), so tables captured before keep their triggers.
-- The common case (no column option, a canonical session, no outbox.* setting) runs a handful of expressions:
-- the key's name, the settings check, to_jsonb, the insert.
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
    INSERT INTO {{outbox}} (event_type, entity_type, entity_id, payload, metadata)
    VALUES (entity OPERATOR(pg_catalog.||) '.created', entity, new_row OPERATOR(pg_catalog.->>) key,
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
    INSERT INTO {{outbox}} (event_type, entity_type, entity_id, payload, metadata)
    SELECT entity OPERATOR(pg_catalog.||) event_type, entity, entity_id,
           pg_catalog.jsonb_build_object('data', new_row, 'previous_attributes', d.changed), {{schema}}.{{name:_event_context}}()
      FROM (SELECT pg_catalog.jsonb_object_agg(o.key, o.value) AS changed FROM pg_catalog.jsonb_each(old_row) AS o
             WHERE NOT coalesce(o.value OPERATOR(pg_catalog.=) (new_row OPERATOR(pg_catalog.->) o.key), false)
               AND NOT coalesce(o.key OPERATOR(pg_catalog.=) ANY (ignored), false)) AS d
     WHERE d.changed IS NOT NULL; -- nothing captured changed, or only ignored columns: no event
    RETURN NULL;
  END IF;
  INSERT INTO {{outbox}} (event_type, entity_type, entity_id, payload, metadata)
  VALUES (entity OPERATOR(pg_catalog.||) event_type, entity, entity_id,
          pg_catalog.jsonb_build_object('data', CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN old_row ELSE new_row END),
          {{schema}}.{{name:_event_context}}());
  RETURN NULL;
END
$fn$;

-- The statement capture function: the same events as the row function, one INSERT … SELECT per statement over
-- its transition tables (new_rows, old_rows), with the options, the settings check and the event context worked
-- out once per statement. Same trigger arguments as the row function.
-- Old and new rows of an UPDATE pair up by position: PostgreSQL appends each updated row's old and new images to
-- the two transition tables together, so the n-th old row is the n-th new row's, even when the key changed.
CREATE FUNCTION {{schema}}.{{name:_capture_rows}}() RETURNS trigger
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
BEGIN
  key := {{schema}}.{{name:_column_name}}(rel, TG_ARGV[2]::pg_catalog.int2);
  IF key IS NULL THEN
    PERFORM {{schema}}.{{name:_key_dropped}}(rel, entity, TG_ARGV[3]);
  END IF;
  IF {{schema}}.{{name:_settings_differ}}() THEN
    session := {{schema}}.{{name:_canonical_settings}}();
  END IF;
  BEGIN
    -- arrays keep the transition tables' order; a subtransaction without a transaction id (it writes nothing)
    IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN new_rows_j := ARRAY(SELECT pg_catalog.to_jsonb(n) FROM new_rows AS n); END IF;
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN old_rows_j := ARRAY(SELECT pg_catalog.to_jsonb(o) FROM old_rows AS o); END IF;
  EXCEPTION WHEN untranslatable_character OR numeric_value_out_of_range OR program_limit_exceeded THEN
    -- transition rows are anonymous records: cast to the table's row type, whose columns _row_jsonb reads by name
    row_type := (SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace WHERE c.oid OPERATOR(pg_catalog.=) rel);
    IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN
      EXECUTE pg_catalog.format('SELECT ARRAY(SELECT %s(n::%s) FROM new_rows AS n)', {{qualified_literal:_row_jsonb}}, row_type) INTO new_rows_j;
    END IF;
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
      EXECUTE pg_catalog.format('SELECT ARRAY(SELECT %s(o::%s) FROM old_rows AS o)', {{qualified_literal:_row_jsonb}}, row_type) INTO old_rows_j;
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
    INSERT INTO {{outbox}} (event_type, entity_type, entity_id, payload, metadata)
    SELECT entity OPERATOR(pg_catalog.||) '.created', entity, r.new_row OPERATOR(pg_catalog.->>) key, pg_catalog.jsonb_build_object('data', r.new_row), context
      FROM pg_catalog.unnest(new_rows_j) AS r(new_row);
    RETURN NULL;
  END IF;
  IF TG_ARGV[4] OPERATOR(pg_catalog.=) '{}' AND TG_ARGV[5] OPERATOR(pg_catalog.=) '' AND TG_ARGV[7] OPERATOR(pg_catalog.=) '{}' AND TG_ARGV[8] OPERATOR(pg_catalog.=) '' THEN
    -- no option in use. Each case is its own short query, so its plan is cached: planning the general query below
    -- costs more than capturing a few rows with it.
    IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
      INSERT INTO {{outbox}} (event_type, entity_type, entity_id, payload, metadata)
      SELECT entity OPERATOR(pg_catalog.||) '.deleted', entity, r.old_row OPERATOR(pg_catalog.->>) key, pg_catalog.jsonb_build_object('data', r.old_row), context
        FROM pg_catalog.unnest(old_rows_j) AS r(old_row);
    ELSE
      INSERT INTO {{outbox}} (event_type, entity_type, entity_id, payload, metadata)
      SELECT entity OPERATOR(pg_catalog.||) '.updated', entity, r.new_row OPERATOR(pg_catalog.->>) key,
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
  INSERT INTO {{outbox}} (event_type, entity_type, entity_id, payload, metadata)
  SELECT entity OPERATOR(pg_catalog.||) e.event_type, entity, e.entity_id,
         CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN pg_catalog.jsonb_build_object('data', f.new_row, 'previous_attributes', d.changed)
              WHEN TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN pg_catalog.jsonb_build_object('data', f.old_row)
                    ELSE pg_catalog.jsonb_build_object('data', f.new_row) END,
         context
    FROM ROWS FROM (pg_catalog.unnest(old_rows_j), pg_catalog.unnest(new_rows_j)) AS r(old_row, new_row)
   CROSS JOIN LATERAL (
         -- the event type and entity id from the whole rows, before any column is filtered out
         SELECT CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN '.created' WHEN TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN '.deleted'
                     WHEN soft_delete IS NULL THEN '.updated'
                     WHEN pg_catalog.jsonb_typeof(r.old_row OPERATOR(pg_catalog.->) soft_delete) OPERATOR(pg_catalog.=) 'null' AND pg_catalog.jsonb_typeof(r.new_row OPERATOR(pg_catalog.->) soft_delete) OPERATOR(pg_catalog.<>) 'null' THEN '.deleted'
                     WHEN pg_catalog.jsonb_typeof(r.old_row OPERATOR(pg_catalog.->) soft_delete) OPERATOR(pg_catalog.<>) 'null' AND pg_catalog.jsonb_typeof(r.new_row OPERATOR(pg_catalog.->) soft_delete) OPERATOR(pg_catalog.=) 'null' THEN '.restored'
                     ELSE '.updated' END AS event_type,
                CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN r.old_row ELSE r.new_row END OPERATOR(pg_catalog.->>) key AS entity_id) AS e
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

-- The wake-up check, without a SET clause (see the top of this file).
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_wake_pollers}}() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
AS $fn$
BEGIN
  -- No payload: identical notifications of one transaction fold into one.
  IF (SELECT w.asleep FROM {{schema}}.{{name:_wakeup}} AS w) THEN
    PERFORM pg_catalog.pg_notify({{channel}}, '');
  END IF;
  RETURN NULL;
END
$fn$;

-- Writes a table's capture triggers for a mode and its registry row. 'row': a row trigger for inserts and
-- deletes and one for updates (WHEN (OLD.* *<> NEW.*): updates that change nothing never call it);
-- 'statement': one statement trigger per event, with its transition tables.
DROP FUNCTION {{schema}}.{{name:_capture_attach}}(regclass, text, int2, text, int2[], int2[], int2[], text[], int2, text[]);
CREATE FUNCTION {{schema}}.{{name:_capture_attach}}(
  target regclass, entity text, key_attnum int2, key_name text, ignored int2[], columns int2[], excluded int2[],
  excluded_names text[], soft_delete int2, events text[], mode text)
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
    -- the entity id always travels with the row
    columns := ARRAY(SELECT DISTINCT c FROM unnest(columns || key_attnum) AS c WHERE c IS NOT NULL ORDER BY c);
  END IF;
  args := format('%L, %L, %L, %L, %L, %L, %L, %L, %L', entity, target::oid, coalesce(key_attnum, 0), key_name, ignored,
                 coalesce(columns::text, ''), excluded, excluded_names, coalesce(soft_delete::text, ''));
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
           'mode', mode)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = target;
END
$fn$;

-- Attaches the capture to a table (or replaces the options of a captured one): the same arguments as before, and
-- the mode: 'row', 'statement', or 'auto' (the default, see the README: statement where PostgreSQL allows it).
-- A partitioned table is captured by row: a statement trigger on the parent never sees a write made directly to a
-- partition.
DROP FUNCTION {{schema}}.{{name:_capture_table}}(regclass, text, text, text[], text[], text[], text, text[]);
CREATE FUNCTION {{schema}}.{{name:_capture_table}}(
  target regclass, entity text, key_column text,
  ignored_columns text[] DEFAULT '{}', columns text[] DEFAULT '{}', excluded_columns text[] DEFAULT '{}',
  soft_delete_column text DEFAULT NULL, events text[] DEFAULT '{insert,update,delete}', mode text DEFAULT 'auto')
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
  IF events IS NULL OR cardinality(events) = 0 OR NOT events <@ '{insert,update,delete}'::text[] THEN
    RAISE EXCEPTION 'events must be a non-empty subset of insert, update, delete (got %)', events USING ERRCODE = '22023';
  END IF;
  EXECUTE number_of INTO key_attnum USING target, ARRAY[key_column];
  EXECUTE number_of INTO ignored USING target, ignored_columns;
  EXECUTE number_of INTO captured USING target, columns;
  EXECUTE number_of INTO excluded USING target, excluded_columns;
  EXECUTE number_of INTO soft_delete USING target, ARRAY[soft_delete_column];
  PERFORM {{schema}}.{{name:_capture_attach}}(target, entity, key_attnum[1], key_column, coalesce(ignored, '{}'),
    CASE WHEN cardinality(columns) > 0 THEN captured END, coalesce(excluded, '{}'), coalesce(excluded_columns, '{}'), soft_delete[1], events, mode);
END
$fn$;

-- Detaches the capture triggers, of either mode, from a table and forgets it.
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_uncapture_table}}(target regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  suffix text;
BEGIN
  FOREACH suffix IN ARRAY ARRAY['', '_update', '_stmt_i', '_stmt_u', '_stmt_d'] LOOP
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', {{capture_trigger}} || suffix, target);
  END LOOP;
  DELETE FROM {{schema}}.{{name:_captured}} AS r
   USING pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = target AND (r.relid = target OR (r.table_schema, r.table_name) = (n.nspname, c.relname));
END
$fn$;

REVOKE ALL ON FUNCTION {{schema}}.{{name:_capture_rows}}() FROM PUBLIC;
REVOKE ALL ON FUNCTION {{schema}}.{{name:_capture_attach}}(regclass, text, int2, text, int2[], int2[], int2[], text[], int2, text[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION {{schema}}.{{name:_capture_table}}(regclass, text, text, text[], text[], text[], text, text[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION {{schema}}.{{name:_capture_options}}(oid, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION {{schema}}.{{name:_key_dropped}}(oid, text, text) FROM PUBLIC;

-- Tables captured before keep their row triggers, now calling the cheaper row function: their mode is 'row'.
UPDATE {{schema}}.{{name:_captured}} SET options = options || '{"mode": "row"}';

-- Every event paid for the per-entity ordering index, whether or not a poller orders. It now exists only where
-- the recorded ordering needs it; `outbox-poller migrate --ordering entity` creates it (concurrently on a large
-- outbox) before pollers start with --ordering entity.
DO $ordering$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM {{schema}}.{{name:_settings}} WHERE name = 'ordering' AND value LIKE 'entity%') THEN
    DROP INDEX IF EXISTS {{schema}}.{{name:_entity_pending}};
  END IF;
END
$ordering$;
