-- The outbox table, its indexes, the wake-up flag and the generic capture trigger function.
-- Placeholders (filled by `outbox-poller migrate`, always as quoted identifiers or literals):
--   {{schema}}        the outbox's schema            e.g. "public"
--   {{outbox}}        the outbox table, qualified    e.g. "public"."outbox"
--   {{name:suffix}}   the table's name + suffix      e.g. "outbox_pending"
--   {{channel}}          the NOTIFY channel, a literal                 e.g. 'outbox_poller.public.outbox'
--   {{capture_trigger}}  the capture triggers' name, a literal         e.g. 'public_outbox_capture'
--   {{capture_function}} the capture function, a qualified name literal e.g. '"public"."outbox_capture"'

CREATE SCHEMA IF NOT EXISTS {{schema}};

-- The seed's columns and names, so its monitoring SQL runs unchanged, plus what retries need.
CREATE TABLE {{outbox}} (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event_id     uuid        NOT NULL DEFAULT gen_random_uuid(),
  event_type   text        NOT NULL,
  entity_type  text        NOT NULL,
  entity_id    text        NOT NULL,
  payload      jsonb       NOT NULL,
  processed_at timestamptz,
  created_at   timestamptz NOT NULL DEFAULT now(),
  -- failed attempts so far; the handler sees attempt = attempts + 1
  attempts     integer     NOT NULL DEFAULT 0,
  -- NULL: due now (never failed). Set: the next attempt's time after a failure.
  retry_at     timestamptz,
  last_error   text,
  -- set when attempts reached --max-attempts: kept, never claimed again; processed_at stays NULL
  dead_at      timestamptz,
  -- event context: correlation_id, causation_id, actor, txid and anything set in outbox.metadata
  metadata     jsonb
);

-- Fresh events, in id order: the claim is an index scan over exactly these rows.
CREATE INDEX {{name:_pending}} ON {{outbox}} (id)
  WHERE processed_at IS NULL AND dead_at IS NULL AND retry_at IS NULL;

-- Events waiting for a retry, by due time: they never sit in the fresh index, so a long retry
-- backlog cannot slow the claim of fresh events.
CREATE INDEX {{name:_retry}} ON {{outbox}} (retry_at)
  WHERE processed_at IS NULL AND dead_at IS NULL AND retry_at IS NOT NULL;

-- Processed-row analytics (the seed's rate and latency queries) and cleanup by age.
CREATE INDEX {{name:_processed}} ON {{outbox}} (processed_at)
  WHERE processed_at IS NOT NULL;

-- Dead letters, for operators.
CREATE INDEX {{name:_dead}} ON {{outbox}} (dead_at)
  WHERE dead_at IS NOT NULL;

-- A high-churn queue: vacuum it early so dead tuples do not pile up between runs.
ALTER TABLE {{outbox}} SET (
  autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_analyze_scale_factor = 0.02,
  fillfactor = 90
);

-- One row: true while some poller sleeps. Writers NOTIFY only then, because every notifying
-- transaction takes a cluster-wide lock at commit and would serialize concurrent writers.
CREATE TABLE {{schema}}.{{name:_wakeup}} (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  asleep    boolean NOT NULL DEFAULT false
);
INSERT INTO {{schema}}.{{name:_wakeup}} DEFAULT VALUES;

CREATE FUNCTION {{schema}}.{{name:_wake_pollers}}() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- No payload: identical notifications of one transaction fold into one.
  IF (SELECT asleep FROM {{schema}}.{{name:_wakeup}}) THEN
    PERFORM pg_notify({{channel}}, '');
  END IF;
  RETURN NULL;
END
$fn$;

CREATE TRIGGER {{name:_wake_pollers}} AFTER INSERT ON {{outbox}}
  FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.{{name:_wake_pollers}}();

-- The event context every event carries in metadata: transaction-local settings (SET LOCAL
-- outbox.correlation_id = …, outbox.causation_id, outbox.actor, outbox.metadata as a JSON object) and the
-- transaction id; '' (what a pooled session reads after another transaction's SET LOCAL) means absent.
-- Plain SQL, so the planner inlines it into its callers.
CREATE FUNCTION {{schema}}.{{name:_event_context}}() RETURNS jsonb
LANGUAGE sql VOLATILE
AS $fn$
  SELECT coalesce(nullif(current_setting('outbox.metadata', true), '')::jsonb, '{}'::jsonb)
      || jsonb_strip_nulls(jsonb_build_object(
           'correlation_id', nullif(current_setting('outbox.correlation_id', true), ''),
           'causation_id', nullif(current_setting('outbox.causation_id', true), ''),
           'actor', nullif(current_setting('outbox.actor', true), ''),
           'txid', pg_current_xact_id()::text))
$fn$;

-- The generic capture function. Trigger arguments (set by {{name:_capture_table}}):
--   0 entity type, 1 key column, 2 ignored columns, 3 captured columns ('{}': all), 4 excluded columns,
--   5 soft-delete column ('': none) — the arrays as text[] literals.
-- Any failure fails the business write with it: no EXCEPTION block, no subtransaction, no lost event.
-- SECURITY DEFINER with a pinned search_path: it runs as the outbox's owner, so application roles that write
-- captured tables need no privilege on the outbox, and no session setting can redirect its inserts.
-- Rows become jsonb with their JSON types kept; ALTER TABLE … ADD/DROP COLUMN needs no re-capture.
CREATE FUNCTION {{schema}}.{{name:_capture}}() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  entity      text := TG_ARGV[0];
  key         text := TG_ARGV[1];
  ignored     text[] := TG_ARGV[2]::text[];
  columns     text[] := TG_ARGV[3]::text[];
  excluded    text[] := TG_ARGV[4]::text[];
  soft_delete text := nullif(TG_ARGV[5], '');
  new_row     jsonb;
  old_row     jsonb;
  entity_id   text;
  event_type  text;
  changed     jsonb;
BEGIN
  IF TG_OP = 'DELETE' THEN
    old_row := to_jsonb(OLD);
    entity_id := old_row ->> key;
    event_type := entity || '.deleted';
  ELSE
    new_row := to_jsonb(NEW);
    entity_id := new_row ->> key;
    event_type := entity || CASE WHEN TG_OP = 'INSERT' THEN '.created' ELSE '.updated' END;
    IF TG_OP = 'UPDATE' THEN
      old_row := to_jsonb(OLD);
      IF soft_delete IS NOT NULL THEN
        IF jsonb_typeof(old_row -> soft_delete) = 'null' AND jsonb_typeof(new_row -> soft_delete) <> 'null' THEN
          event_type := entity || '.deleted';
        ELSIF jsonb_typeof(old_row -> soft_delete) <> 'null' AND jsonb_typeof(new_row -> soft_delete) = 'null' THEN
          event_type := entity || '.restored';
        END IF;
      END IF;
    END IF;
  END IF;
  -- Only the captured columns, never the excluded ones, leave the database.
  IF cardinality(columns) > 0 THEN
    new_row := (SELECT jsonb_object_agg(c.key, c.value) FROM jsonb_each(new_row) AS c WHERE c.key = ANY (columns));
    old_row := (SELECT jsonb_object_agg(c.key, c.value) FROM jsonb_each(old_row) AS c WHERE c.key = ANY (columns));
  END IF;
  IF cardinality(excluded) > 0 THEN
    new_row := new_row - excluded;
    old_row := old_row - excluded;
  END IF;
  IF TG_OP = 'UPDATE' THEN
    -- One jsonb diff: the old values of the columns that changed, with their JSON types kept.
    SELECT jsonb_object_agg(o.key, o.value) INTO changed
      FROM jsonb_each(old_row) AS o
     WHERE o.value IS DISTINCT FROM new_row -> o.key
       AND o.key <> ALL (ignored);
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

-- Attaches the capture function to a table (or replaces the options of a captured one): usable from the
-- application's own migrations too, e.g. SELECT public.outbox_capture_table('app.orders', 'order', 'id', '{updated_at}').
-- format() quotes every identifier and literal; every column named must exist.
CREATE FUNCTION {{schema}}.{{name:_capture_table}}(
  target regclass, entity text, key_column text,
  ignored_columns text[] DEFAULT '{}', columns text[] DEFAULT '{}', excluded_columns text[] DEFAULT '{}',
  soft_delete_column text DEFAULT NULL, events text[] DEFAULT '{insert,update,delete}')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  capture_trigger text := {{capture_trigger}};
  missing text;
  row_events text;
  args text;
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
  IF cardinality(columns) > 0 AND NOT key_column = ANY (columns) THEN
    columns := columns || key_column; -- the entity id always travels with the row
  END IF;
  IF events IS NULL OR cardinality(events) = 0 OR NOT events <@ '{insert,update,delete}'::text[] THEN
    RAISE EXCEPTION 'events must be a non-empty subset of insert, update, delete (got %)', events USING ERRCODE = '22023';
  END IF;
  args := format('%L, %L, %L, %L, %L, %L', entity, key_column, ignored_columns, columns, excluded_columns, coalesce(soft_delete_column, ''));
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
END
$fn$;

-- Detaches the capture triggers from a table.
CREATE FUNCTION {{schema}}.{{name:_uncapture_table}}(target regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', {{capture_trigger}}, target);
  EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', {{capture_trigger}} || '_update', target);
END
$fn$;

-- Only the owner (and roles it grants) may attach the capture function to a table or call the helpers:
-- a trigger function that writes the outbox as its owner must not be attachable by anyone.
REVOKE ALL ON FUNCTION {{schema}}.{{name:_capture}}() FROM PUBLIC;
REVOKE ALL ON FUNCTION {{schema}}.{{name:_wake_pollers}}() FROM PUBLIC;
REVOKE ALL ON FUNCTION {{schema}}.{{name:_capture_table}}(regclass, text, text, text[], text[], text[], text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION {{schema}}.{{name:_uncapture_table}}(regclass) FROM PUBLIC;
