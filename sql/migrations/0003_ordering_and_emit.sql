-- Per-entity ordering, outbox settings and explicit events.

-- Ordered mode claims an event only if no earlier event of its entity is still pending: this index makes
-- that check one probe per candidate row, whatever the backlog. Dead events stay in it (processed_at is
-- NULL), for --ordering-on-dead block.
CREATE INDEX {{name:_entity_pending}} ON {{outbox}} (entity_type, entity_id, id)
  WHERE processed_at IS NULL;

-- Settings that are properties of the outbox, not of one replica (the ordering mode): a replica started
-- with another value refuses to start.
CREATE TABLE {{schema}}.{{name:_settings}} (
  name  text PRIMARY KEY,
  value text NOT NULL,
  set_at timestamptz NOT NULL DEFAULT now()
);

-- An explicit event, written in the caller's transaction with the same shape and guarantees as a
-- captured change; the event context (outbox.correlation_id, …) is added to its metadata.
CREATE FUNCTION {{schema}}.{{name:_emit}}(event_type text, entity_type text, entity_id text, payload jsonb, metadata jsonb DEFAULT NULL)
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
  INSERT INTO {{outbox}} (event_type, entity_type, entity_id, payload, metadata)
  VALUES (event_type, entity_type, entity_id, coalesce(payload, '{}'::jsonb), coalesce(metadata, '{}'::jsonb) || {{schema}}.{{name:_event_context}}())
  RETURNING event_id INTO new_id;
  RETURN new_id;
END
$fn$;
REVOKE ALL ON FUNCTION {{schema}}.{{name:_emit}}(text, text, text, jsonb, jsonb) FROM PUBLIC;
