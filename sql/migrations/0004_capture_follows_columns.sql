-- Capture options that survive DDL, a registry of captured tables, payloads that never depend on the writer's
-- session, and an event context that must be a JSON object.
-- New placeholder: {{qualified_literal:suffix}}, the qualified name of a derived object as a literal, e.g. '"public"."outbox_capture_table"'.

-- Every table captured into this outbox, as it was when captured: `captures`, `status`, /healthz and the
-- outbox_captured_tables_lost metric report one that was dropped, re-created or lost its triggers (a
-- DROP TABLE takes the triggers with it, silently). Readable by every role: pg_trigger shows the same facts.
CREATE TABLE {{schema}}.{{name:_captured}} (
  relid        oid PRIMARY KEY,
  table_schema name NOT NULL,
  table_name   name NOT NULL,
  entity       text NOT NULL,
  -- the options as given, column names as they were then: {"key": …, "ignore_columns": […], …}
  options      jsonb NOT NULL,
  captured_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (table_schema, table_name)
);
GRANT SELECT ON {{schema}}.{{name:_captured}} TO PUBLIC;

-- A row as jsonb, column by column, for the rows whose to_jsonb fails: jsonb refuses some json that json
-- accepts (a \u0000 escape, a number beyond numeric's range, a value over jsonb's size limit), and a capture must
-- never reject a write its table accepts. Such a column is carried as its JSON text, a string. json functions
-- that read keys unescape every string, so the columns are read one by one, by name.
CREATE FUNCTION {{schema}}.{{name:_row_jsonb}}(row_value anyelement) RETURNS jsonb
LANGUAGE plpgsql
AS $fn$
DECLARE
  result jsonb := '{}';
  value jsonb;
  column_name name;
BEGIN
  FOR column_name IN
    SELECT a.attname FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid
     WHERE t.oid = pg_typeof(row_value) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
  LOOP
    BEGIN
      EXECUTE format('SELECT to_jsonb(($1).%I)', column_name) INTO value USING row_value;
    EXCEPTION WHEN untranslatable_character OR numeric_value_out_of_range OR program_limit_exceeded THEN
      EXECUTE format('SELECT to_jsonb(to_json(($1).%I)::text)', column_name) INTO value USING row_value;
    END;
    result := result || jsonb_build_object(column_name, value);
  END LOOP;
  RETURN result;
END
$fn$;

-- outbox.metadata must be a JSON object: anything else fails the write with an error that names the setting.
-- Called only when the setting is not empty. Like the other helpers here it has no SET clause (a settings save and
-- restore on every call): its callers pin the search_path.
CREATE FUNCTION {{schema}}.{{name:_metadata_setting}}(setting text) RETURNS jsonb
LANGUAGE plpgsql
AS $fn$
DECLARE
  value jsonb;
BEGIN
  BEGIN
    value := setting::jsonb;
  EXCEPTION WHEN invalid_text_representation OR untranslatable_character OR numeric_value_out_of_range THEN
    RAISE EXCEPTION 'outbox.metadata must be a JSON object (got %): %', left(setting, 100), SQLERRM USING ERRCODE = '22023';
  END;
  IF jsonb_typeof(value) <> 'object' THEN
    RAISE EXCEPTION 'outbox.metadata must be a JSON object (got %)', left(setting, 100) USING ERRCODE = '22023';
  END IF;
  RETURN value;
END
$fn$;

-- Same context as before; outbox.metadata is now checked. Still plain SQL, inlined into its callers.
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_event_context}}() RETURNS jsonb
LANGUAGE sql VOLATILE
AS $fn$
  SELECT CASE WHEN coalesce(current_setting('outbox.metadata', true), '') = '' THEN '{}'::jsonb
              ELSE {{schema}}.{{name:_metadata_setting}}(current_setting('outbox.metadata', true)) END
      || jsonb_strip_nulls(jsonb_build_object(
           'correlation_id', nullif(current_setting('outbox.correlation_id', true), ''),
           'causation_id', nullif(current_setting('outbox.causation_id', true), ''),
           'actor', nullif(current_setting('outbox.actor', true), ''),
           'txid', pg_current_xact_id()::text))
$fn$;

-- emit's own metadata follows the same rule as outbox.metadata: a JSON object (or NULL).
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_emit}}(event_type text, entity_type text, entity_id text, payload jsonb, metadata jsonb DEFAULT NULL)
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
  INSERT INTO {{outbox}} (event_type, entity_type, entity_id, payload, metadata)
  VALUES (event_type, entity_type, entity_id, coalesce(payload, '{}'::jsonb), coalesce(metadata, '{}'::jsonb) || {{schema}}.{{name:_event_context}}())
  RETURNING event_id INTO new_id;
  RETURN new_id;
END
$fn$;

-- Sets the settings that change how values render to their canonical values, where they differ, and returns
-- what to put back (name, value, name, value, …); given that, puts it back. SET LOCAL semantics: a value the
-- transaction set stays local, a session value is what the transaction ends with, an error rolls it all back.
-- Called only from sessions that differ from the canonical forms.
CREATE FUNCTION {{schema}}.{{name:_canonical_settings}}(saved text[] DEFAULT NULL) RETURNS text[]
LANGUAGE plpgsql
AS $fn$
DECLARE
  setting text[];
  changed text[] := '{}';
  ignored text;
BEGIN
  -- assignments, not PERFORM: plain expressions, without a query each
  IF saved IS NOT NULL THEN
    FOR i IN 1 .. cardinality(saved) BY 2 LOOP
      ignored := set_config(saved[i], saved[i + 1], true);
    END LOOP;
    RETURN NULL;
  END IF;
  FOREACH setting SLICE 1 IN ARRAY ARRAY[['TimeZone', 'UTC'], ['DateStyle', 'ISO, MDY'], ['IntervalStyle', 'postgres'],
                                          ['bytea_output', 'hex'], ['extra_float_digits', '1']] LOOP
    IF current_setting(setting[1]) <> setting[2] THEN
      changed := changed || ARRAY[setting[1], current_setting(setting[1])];
      ignored := set_config(setting[1], setting[2], true);
    END IF;
  END LOOP;
  RETURN changed;
END
$fn$;

-- A column's current name by number; NULL once dropped. Plain SQL over two catalog-cache lookups, inlined into
-- the capture function: about 2 µs, where a query on pg_attribute costs 3 to 8 µs and, with an array parameter,
-- may be planned again on every row.
CREATE FUNCTION {{schema}}.{{name:_column_name}}(rel oid, attnum int2) RETURNS text
LANGUAGE sql STABLE
AS $fn$
  SELECT CASE WHEN has_column_privilege(rel, attnum, 'SELECT') IS NOT NULL -- NULL: no such column (dropped)
              THEN (pg_identify_object_as_address('pg_class'::regclass, rel, attnum)).object_names[3] END
$fn$;

-- The capture function, reading its options by column number. Trigger arguments (set by {{name:_capture_attach}}):
--   0 entity type, 1 the captured table's oid, 2 key column number, 3 key column name (for the error when it is
--   dropped), 4 ignored column numbers, 5 captured column numbers ('': all), 6 excluded column numbers,
--   7 excluded column names, 8 soft-delete column number ('': none); arrays as int2[] / text[] literals.
-- Names are looked up per row, so options follow RENAME COLUMN; a dropped option column is gone, and an excluded
-- column is also excluded by its old name (a column dropped and re-added under that name gets a new number),
-- so it never leaks whatever DDL happens. A dropped key column fails the write (the event could not say which
-- entity changed), with the command that fixes it.
-- The payload is the same whatever the writer's session: values are rendered with TimeZone UTC, DateStyle ISO,
-- IntervalStyle postgres, bytea_output hex and extra_float_digits 1. A session with other values gets them set
-- for the conversion and put back, so canonical sessions (the usual case) pay only the check; a SET clause would
-- save and restore the settings on every call (measured on single-row transactions: about 7 µs for the check,
-- 13 µs for a SET clause).
-- Any other failure fails the business write with it: no event is ever dropped.
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_capture}}() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  entity      text := TG_ARGV[0];
  rel         oid := TG_ARGV[1];
  key         text;
  ignored     text[]; -- NULL: the option is not in use
  columns     text[];
  excluded    text[];
  soft_delete text;
  attnum      int2;
  session     text[];
  new_row     jsonb;
  old_row     jsonb;
  entity_id   text;
  event_type  text;
  changed     jsonb;
BEGIN
  IF rel <> TG_RELID THEN
    -- a partition (its numbers may differ from the captured parent's, its names do not), or a table restored
    -- from a dump (a new oid: its own numbers)
    rel := CASE WHEN rel IN (SELECT relid FROM pg_partition_ancestors(TG_RELID)) THEN rel ELSE TG_RELID END;
  END IF;
  key := {{schema}}.{{name:_column_name}}(rel, TG_ARGV[2]::int2);
  IF key IS NULL THEN
    -- the one case where failing the write is right: the event could not say which entity changed
    RAISE EXCEPTION '%', format('captured table %s has no key column %s any more (dropped): capture it again with another key: outbox-poller capture %s --entity %s --key <column>, or SELECT %s(%L, %L, %L)',
      rel::regclass, quote_ident(TG_ARGV[3]), rel::regclass, entity, {{qualified_literal:_capture_table}}, rel::regclass::text, entity, '<column>')
      USING ERRCODE = '42703';
  END IF;
  -- The other options, only when in use: every expression costs its set-up once per transaction, and most
  -- transactions write one row. A dropped column becomes '', a name no column can have.
  IF TG_ARGV[4] <> '{}' OR TG_ARGV[5] <> '' OR TG_ARGV[7] <> '{}' OR TG_ARGV[8] <> '' THEN
    IF TG_OP = 'UPDATE' AND TG_ARGV[4] <> '{}' THEN
      ignored := '{}';
      FOREACH attnum IN ARRAY TG_ARGV[4]::int2[] LOOP ignored := ignored || coalesce({{schema}}.{{name:_column_name}}(rel, attnum), ''); END LOOP;
    END IF;
    IF TG_OP = 'UPDATE' AND TG_ARGV[8] <> '' THEN
      soft_delete := {{schema}}.{{name:_column_name}}(rel, TG_ARGV[8]::int2);
    END IF;
    IF TG_ARGV[5] <> '' THEN
      columns := '{}';
      FOREACH attnum IN ARRAY TG_ARGV[5]::int2[] LOOP columns := columns || coalesce({{schema}}.{{name:_column_name}}(rel, attnum), ''); END LOOP;
    END IF;
    IF TG_ARGV[7] <> '{}' THEN
      excluded := TG_ARGV[7]::text[];
      FOREACH attnum IN ARRAY TG_ARGV[6]::int2[] LOOP excluded := excluded || coalesce({{schema}}.{{name:_column_name}}(rel, attnum), ''); END LOOP;
    END IF;
  END IF;
  IF current_setting('TimeZone') NOT IN ('UTC', 'Etc/UTC', 'GMT', 'Etc/GMT') OR current_setting('DateStyle') NOT LIKE 'ISO,%'
     OR current_setting('IntervalStyle') <> 'postgres' OR current_setting('bytea_output') <> 'hex' OR current_setting('extra_float_digits')::int < 1 THEN
    session := {{schema}}.{{name:_canonical_settings}}();
  END IF;
  BEGIN
    -- a subtransaction without a transaction id (it writes nothing); NEW or OLD is NULL where it does not apply
    new_row := to_jsonb(NEW);
    old_row := to_jsonb(OLD);
  EXCEPTION WHEN untranslatable_character OR numeric_value_out_of_range OR program_limit_exceeded THEN
    IF TG_OP <> 'DELETE' THEN new_row := {{schema}}.{{name:_row_jsonb}}(NEW); END IF;
    IF TG_OP <> 'INSERT' THEN old_row := {{schema}}.{{name:_row_jsonb}}(OLD); END IF;
  END;
  IF session IS NOT NULL THEN
    session := {{schema}}.{{name:_canonical_settings}}(session);
  END IF;
  IF TG_OP = 'DELETE' THEN
    entity_id := old_row ->> key;
    event_type := entity || '.deleted';
  ELSE
    entity_id := new_row ->> key;
    event_type := entity || CASE WHEN TG_OP = 'INSERT' THEN '.created' ELSE '.updated' END;
    IF TG_OP = 'UPDATE' AND soft_delete IS NOT NULL THEN
      IF jsonb_typeof(old_row -> soft_delete) = 'null' AND jsonb_typeof(new_row -> soft_delete) <> 'null' THEN
        event_type := entity || '.deleted';
      ELSIF jsonb_typeof(old_row -> soft_delete) <> 'null' AND jsonb_typeof(new_row -> soft_delete) = 'null' THEN
        event_type := entity || '.restored';
      END IF;
    END IF;
  END IF;
  -- Only the captured columns, never the excluded ones, leave the database.
  IF columns IS NOT NULL THEN
    new_row := (SELECT coalesce(jsonb_object_agg(c.key, c.value), '{}') FROM jsonb_each(new_row) AS c WHERE c.key = ANY (columns));
    old_row := (SELECT coalesce(jsonb_object_agg(c.key, c.value), '{}') FROM jsonb_each(old_row) AS c WHERE c.key = ANY (columns));
  END IF;
  IF excluded IS NOT NULL THEN
    new_row := new_row - excluded;
    old_row := old_row - excluded;
  END IF;
  IF TG_OP = 'UPDATE' THEN
    -- One jsonb diff: the old values of the columns that changed, with their JSON types kept.
    SELECT jsonb_object_agg(o.key, o.value) INTO changed
      FROM jsonb_each(old_row) AS o
     WHERE o.value IS DISTINCT FROM new_row -> o.key
       AND o.key <> ALL (coalesce(ignored, '{}'));
    IF changed IS NULL THEN
      RETURN NULL; -- nothing captured changed, or only ignored columns
    END IF;
  END IF;
  INSERT INTO {{outbox}} (event_type, entity_type, entity_id, payload, metadata)
  VALUES (event_type, entity, entity_id,
          CASE WHEN TG_OP = 'UPDATE' THEN jsonb_build_object('data', new_row, 'previous_attributes', changed)
               WHEN TG_OP = 'DELETE' THEN jsonb_build_object('data', old_row)
               ELSE jsonb_build_object('data', new_row) END,
          {{schema}}.{{name:_event_context}}());
  RETURN NULL;
END
$fn$;

-- Writes a table's capture triggers (column options as numbers) and its registry row. Called by
-- {{name:_capture_table}}, which checks the names, and by this migration's upgrade of existing captures.
CREATE FUNCTION {{schema}}.{{name:_capture_attach}}(
  target regclass, entity text, key_attnum int2, key_name text, ignored int2[], columns int2[], excluded int2[],
  excluded_names text[], soft_delete int2, events text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  capture_trigger text := {{capture_trigger}};
  names text[];
  args text;
  row_events text;
BEGIN
  IF columns IS NOT NULL THEN
    -- the entity id always travels with the row
    columns := ARRAY(SELECT DISTINCT c FROM unnest(columns || key_attnum) AS c WHERE c IS NOT NULL ORDER BY c);
  END IF;
  args := format('%L, %L, %L, %L, %L, %L, %L, %L, %L', entity, target::oid, coalesce(key_attnum, 0), key_name, ignored,
                 coalesce(columns::text, ''), excluded, excluded_names, coalesce(soft_delete::text, ''));
  row_events := array_to_string(ARRAY(SELECT upper(e) FROM unnest(events) AS e WHERE e IN ('insert', 'delete') ORDER BY 1 DESC), ' OR ');
  IF row_events <> '' THEN
    EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s FOR EACH ROW EXECUTE FUNCTION %s(%s)',
                   capture_trigger, row_events, target, {{capture_function}}, args);
  ELSE
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', capture_trigger, target);
  END IF;
  IF 'update' = ANY (events) THEN
    -- Updates that change nothing never reach the function. *<> compares the row images byte by byte, so
    -- it works for every column type (json, xml and point have no equality operator for IS DISTINCT FROM).
    EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER UPDATE ON %s FOR EACH ROW WHEN (OLD.* *<> NEW.*) EXECUTE FUNCTION %s(%s)',
                   capture_trigger || '_update', target, {{capture_function}}, args);
  ELSE
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', capture_trigger || '_update', target);
  END IF;
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
           'events', events)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = target;
END
$fn$;

-- Attaches the capture function to a table (or replaces the options of a captured one): same arguments as before,
-- e.g. SELECT public.outbox_capture_table('app.orders', 'order', 'id', '{updated_at}'). Every column named must exist.
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_capture_table}}(
  target regclass, entity text, key_column text,
  ignored_columns text[] DEFAULT '{}', columns text[] DEFAULT '{}', excluded_columns text[] DEFAULT '{}',
  soft_delete_column text DEFAULT NULL, events text[] DEFAULT '{insert,update,delete}')
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
BEGIN
  IF entity IS NULL OR entity = '' THEN
    RAISE EXCEPTION 'entity must not be empty' USING ERRCODE = '22023';
  END IF;
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
    CASE WHEN cardinality(columns) > 0 THEN captured END, coalesce(excluded, '{}'), coalesce(excluded_columns, '{}'), soft_delete[1], events);
END
$fn$;

-- Detaches the capture triggers from a table and forgets it.
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_uncapture_table}}(target regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', {{capture_trigger}}, target);
  EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', {{capture_trigger}} || '_update', target);
  DELETE FROM {{schema}}.{{name:_captured}} AS r
   USING pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = target AND (r.relid = target OR (r.table_schema, r.table_name) = (n.nspname, c.relname));
END
$fn$;

REVOKE ALL ON FUNCTION {{schema}}.{{name:_capture_attach}}(regclass, text, int2, text, int2[], int2[], int2[], text[], int2, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION {{schema}}.{{name:_row_jsonb}}(anyelement) FROM PUBLIC;

-- Upgrade: tables captured before this migration carry column names in their trigger arguments. Rewrite them
-- with numbers, resolving the names as they are now; a name that no longer resolves keeps nothing, except an
-- excluded one (still excluded by name) and the key (its writes fail with the fixing command, as they did).
DO $upgrade$
DECLARE
  captured record;
  args text[];
  rest bytea;
  cut int;
  number_of text := 'SELECT coalesce(array_agg(a.attnum ORDER BY a.attnum), ''{}'') FROM pg_attribute a WHERE a.attrelid = $1 AND a.attname = ANY ($2) AND a.attnum > 0 AND NOT a.attisdropped';
  key_attnum int2[];
  ignored int2[];
  columns int2[];
  excluded int2[];
  soft_delete int2[];
BEGIN
  FOR captured IN
    SELECT t.tgrelid::regclass AS target, (array_agg(t.tgargs))[1] AS tgargs,
           array_remove(ARRAY[CASE WHEN bit_or(t.tgtype) & 4 <> 0 THEN 'insert' END, CASE WHEN bit_or(t.tgtype) & 16 <> 0 THEN 'update' END,
                              CASE WHEN bit_or(t.tgtype) & 8 <> 0 THEN 'delete' END], NULL) AS events
      FROM pg_trigger t
     WHERE t.tgfoid = {{capture_function}}::regproc AND t.tgname IN ({{capture_trigger}}, {{capture_trigger}} || '_update')
       AND t.tgparentid = 0 AND t.tgnargs = 6
     GROUP BY t.tgrelid
  LOOP
    -- tgargs: each argument ended by a NUL byte
    args := '{}';
    rest := captured.tgargs;
    WHILE length(rest) > 0 LOOP
      cut := position('\x00'::bytea IN rest);
      args := args || convert_from(substring(rest FROM 1 FOR cut - 1), current_setting('server_encoding'));
      rest := substring(rest FROM cut + 1);
    END LOOP;
    EXECUTE number_of INTO key_attnum USING captured.target, ARRAY[args[2]];
    EXECUTE number_of INTO ignored USING captured.target, args[3]::text[];
    EXECUTE number_of INTO columns USING captured.target, args[4]::text[];
    EXECUTE number_of INTO excluded USING captured.target, args[5]::text[];
    EXECUTE number_of INTO soft_delete USING captured.target, ARRAY[nullif(args[6], '')];
    PERFORM {{schema}}.{{name:_capture_attach}}(captured.target, args[1], key_attnum[1], args[2], ignored,
      CASE WHEN cardinality(args[4]::text[]) > 0 THEN columns END, excluded, args[5]::text[], soft_delete[1], captured.events);
  END LOOP;
END
$upgrade$;
