-- A writing transaction can carry a W3C traceparent (outbox.traceparent), stored in its events' metadata, so the
-- poller's span of an event continues the writer's trace. Only the two event-context functions change: every
-- capture function and outbox_emit call _event_context, so they all carry it without being replaced. Names stay
-- schema-qualified, operators written OPERATOR(pg_catalog.…), as in 0005.

-- The event context when some outbox.* setting is set (see {{name:_event_context}}). A traceparent is stored only
-- when it has the W3C form (version ff and all-zero ids are invalid; version 00 has no further fields): a header
-- forwarded from some client must never fail the business write, and a malformed one is ignored, as W3C asks.
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_event_context_set}}() RETURNS pg_catalog.jsonb
LANGUAGE sql VOLATILE
AS $fn$
  SELECT CASE WHEN pg_catalog.concat(pg_catalog.current_setting('outbox.metadata', true)) OPERATOR(pg_catalog.=) '' THEN '{}'::pg_catalog.jsonb
              ELSE {{schema}}.{{name:_metadata_setting}}(pg_catalog.current_setting('outbox.metadata', true)) END
      OPERATOR(pg_catalog.||) pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
           'correlation_id', CASE WHEN pg_catalog.current_setting('outbox.correlation_id', true) OPERATOR(pg_catalog.<>) '' THEN pg_catalog.current_setting('outbox.correlation_id', true) END,
           'causation_id', CASE WHEN pg_catalog.current_setting('outbox.causation_id', true) OPERATOR(pg_catalog.<>) '' THEN pg_catalog.current_setting('outbox.causation_id', true) END,
           'actor', CASE WHEN pg_catalog.current_setting('outbox.actor', true) OPERATOR(pg_catalog.<>) '' THEN pg_catalog.current_setting('outbox.actor', true) END,
           'traceparent', CASE WHEN pg_catalog.current_setting('outbox.traceparent', true)
                                      OPERATOR(pg_catalog.~) '^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$'
                                AND NOT pg_catalog.current_setting('outbox.traceparent', true) OPERATOR(pg_catalog.~) '^00-.{52}-'
                               THEN pg_catalog.current_setting('outbox.traceparent', true) END,
           'txid', pg_catalog.pg_current_xact_id()::pg_catalog.text))
$fn$;

-- As in 0005, with outbox.traceparent among the tells: a write that sets none of the settings still pays one concat.
CREATE OR REPLACE FUNCTION {{schema}}.{{name:_event_context}}() RETURNS pg_catalog.jsonb
LANGUAGE sql VOLATILE
AS $fn$
  SELECT CASE WHEN pg_catalog.concat(pg_catalog.current_setting('outbox.metadata', true), pg_catalog.current_setting('outbox.correlation_id', true),
                                     pg_catalog.current_setting('outbox.causation_id', true), pg_catalog.current_setting('outbox.actor', true),
                                     pg_catalog.current_setting('outbox.traceparent', true)) OPERATOR(pg_catalog.=) ''
              THEN pg_catalog.jsonb_build_object('txid', pg_catalog.pg_current_xact_id()::pg_catalog.text)
              ELSE {{schema}}.{{name:_event_context_set}}() END
$fn$;
