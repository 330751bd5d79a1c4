-- Operator queries against the outbox, for psql or a dashboard. They name the default table, `outbox`
-- in the search path: for another schema or table (--schema, --table), replace `outbox` (and the
-- 'outbox' literals of the statistics queries). `outbox-poller status` runs the same measures.
--
-- Each query says what it answers, what a healthy value looks like, and its plan on a big outbox:
-- 3,050,000 rows (3,000,000 processed over 7 days, 45,000 fresh, 4,000 waiting for a retry of which
-- 20 suspect, 1,000 dead), 724 MB with indexes, after VACUUM ANALYZE, on PostgreSQL 15 on a 2-core
-- machine; EXPLAIN (ANALYZE), median of five runs with warm caches. The seed's queries come first, unchanged (their plans
-- scan the whole table, which is what they ask for); ours follow, each an index scan over pending rows
-- or a time-bounded range of processed rows, so their cost follows the backlog and the recent
-- throughput, never the size of the table.
--
-- States of a row: pending = processed_at IS NULL AND dead_at IS NULL, of which fresh (retry_at IS NULL,
-- due now) or retrying (retry_at set: due once retry_at <= now()); suspect = pending and suspect (a
-- worker died while handling it; claimed alone); dead = dead_at IS NOT NULL (processed_at stays NULL);
-- processed = processed_at IS NOT NULL.


-- ─── The seed's queries ────────────────────────────────────────────────────────────────────────────

-- Backlog: events not processed, dead letters included (dead events keep processed_at NULL).
-- Healthy: a few batches at most, and not growing; "Lifecycle states" below splits it.
-- Plan: parallel seq scan of the whole table; 234 ms (cost 89,660). Use "Lifecycle states" on a big table.
SELECT COUNT(*) FROM outbox WHERE processed_at IS NULL;

-- Unprocessed events by type (dead letters included).
-- Healthy: no type stands out; one type growing alone points at its handler.
-- Plan: parallel seq scan + hash aggregate; 219 ms (cost 89,716). "Pending by type" below is the indexed one.
SELECT event_type, COUNT(*) FROM outbox WHERE processed_at IS NULL GROUP BY event_type;

-- Processing rate, per minute over the last hour.
-- Healthy: about the rate events are written; minutes without a row processed nothing at all.
-- Plan: index-only scan of outbox_processed over the last hour + sort; 4.8 ms (cost 2,053).
SELECT DATE_TRUNC('minute', processed_at) as minute, COUNT(*) as processed_count FROM outbox WHERE processed_at > NOW() - INTERVAL '1 hour' GROUP BY minute ORDER BY minute;

-- Average processing time (creation to processed, seconds) per type, over every processed row kept.
-- Healthy: below a second with idle pollers (LISTEN/NOTIFY wakes them within milliseconds).
-- Plan: parallel seq scan of every processed row, JIT-compiled; 856 ms (cost 102,136). "Latency
-- percentiles" below answers the same for the last 5 minutes in 0.9 ms.
SELECT event_type, AVG(EXTRACT(EPOCH FROM (processed_at - created_at))) as avg_seconds FROM outbox WHERE processed_at IS NOT NULL GROUP BY event_type;

-- Queue depth per hour over the last 24 hours: events created, processed, and still unprocessed.
-- Healthy: queue_depth 0 for every hour but the current one.
-- Plan: parallel seq scan (no index on created_at) + sort, JIT-compiled; 444 ms (cost 180,024).
-- "Queue depth and error rate per hour" below is the time-bounded one.
SELECT DATE_TRUNC('hour', created_at) as hour, COUNT(*) as events_created, COUNT(processed_at) as events_processed, COUNT(*) - COUNT(processed_at) as queue_depth FROM outbox WHERE created_at > NOW() - INTERVAL '24 hours' GROUP BY hour ORDER BY hour;

-- Error rate per hour over the last 24 hours: events still unprocessed 5 minutes after creation
-- (retrying, dead, or stuck), as a share of the hour's events.
-- Healthy: 0 %; the seed warns above 5 % and calls 15 % critical.
-- Plan: parallel seq scan + sort, JIT-compiled, as the queue depth query; 419 ms (cost 186,840).
SELECT
    DATE_TRUNC('hour', created_at) as hour,
    COUNT(*) as total_events,
    COUNT(CASE WHEN processed_at IS NULL AND created_at < NOW() - INTERVAL '5 minutes' THEN 1 END) as failed_events,
    ROUND(
        (COUNT(CASE WHEN processed_at IS NULL AND created_at < NOW() - INTERVAL '5 minutes' THEN 1 END) * 100.0) / COUNT(*),
        2
    ) as error_rate_percent
FROM outbox
WHERE created_at > NOW() - INTERVAL '24 hours'
GROUP BY hour
ORDER BY hour;

-- Index usage: how often each outbox index was scanned since the statistics were reset. (The seed
-- wrote tablename and indexname, which pg_stat_user_indexes does not have; these are its columns.)
-- Healthy: outbox_pending and outbox_retry scanned on every claim; outbox_processed by cleanup and
-- these queries; idx_scan 0 for an index only means nothing needed it yet.
-- Plan: catalog join; 0.1 ms.
SELECT schemaname, relname, indexrelname, idx_scan, idx_tup_read, idx_tup_fetch FROM pg_stat_user_indexes WHERE relname = 'outbox' ORDER BY idx_scan DESC;

-- Table statistics: scans and row changes since the statistics were reset.
-- Healthy: seq_scan grows only with the seed's whole-table queries above (the pollers never scan the table).
-- Plan: catalog join; 0.1 ms.
SELECT seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = 'outbox';

-- Table size: rows, indexes and TOAST together; the heap alone; the indexes alone.
-- Healthy: flat once cleanup runs (`outbox-poller cleanup --older-than 7d`, daily).
-- Plan: no table access; 0.1 ms.
SELECT
    pg_size_pretty(pg_total_relation_size('outbox')) as total_size,
    pg_size_pretty(pg_relation_size('outbox')) as table_size,
    pg_size_pretty(pg_indexes_size('outbox')) as index_size;


-- ─── Ours ──────────────────────────────────────────────────────────────────────────────────────────

-- Lifecycle states: due now (fresh, or a retry whose time has come), waiting for a retry, suspect
-- (a worker died on it; part of the first two), dead.
-- Healthy: due_now below a few batches; waiting_for_retry 0 (growing: a handler or what it calls is
-- failing); suspect 0 (any: a worker crashed on those events); dead 0 (any: see "Dead events").
-- Plan: five index-only scans of the partial indexes outbox_pending, outbox_retry (twice),
-- outbox_suspect and outbox_dead, each over its own rows only; 5.4 ms (cost 1,325).
SELECT
    (SELECT COUNT(*) FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL AND retry_at IS NULL)
  + (SELECT COUNT(*) FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL AND retry_at <= NOW()) AS due_now,
    (SELECT COUNT(*) FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL AND retry_at > NOW()) AS waiting_for_retry,
    (SELECT COUNT(*) FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL AND suspect) AS suspect,
    (SELECT COUNT(*) FROM outbox WHERE dead_at IS NOT NULL) AS dead;

-- Oldest pending event's age (the lag): how far behind the pollers are. The oldest fresh event is the
-- first of outbox_pending in id order (ids follow commit order closely enough for this); events
-- waiting for a retry are older than they look, so their oldest creation time counts too. Dead
-- events do not: they wait for an operator, not for a poller.
-- Healthy: under a second or two (a poller wakes on NOTIFY, and polls at least every --interval-max);
-- minutes mean the pollers are down, too few, or a retry has been failing that long.
-- Plan: a one-row index scan of outbox_pending + an index scan of outbox_retry; 0.8 ms (cost 133).
SELECT NOW() - MIN(created_at) AS oldest_pending_age
  FROM ((SELECT created_at FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL AND retry_at IS NULL ORDER BY id LIMIT 1)
        UNION ALL
        (SELECT MIN(created_at) FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL AND retry_at IS NOT NULL)) AS oldest;

-- Latency percentiles (creation to processed, seconds) per type over the last 5 minutes.
-- Healthy: p50 in milliseconds, p99 below a second plus the handlers' own time; p99 far above p50
-- means retries or a backlog.
-- Plan: index scan of outbox_processed over the last 5 minutes + sort + group aggregate; 0.9 ms (cost 157).
SELECT event_type,
       COUNT(*) AS processed,
       ROUND(percentile_cont(0.50) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM processed_at - created_at))::numeric, 3) AS p50_seconds,
       ROUND(percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM processed_at - created_at))::numeric, 3) AS p95_seconds,
       ROUND(percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM processed_at - created_at))::numeric, 3) AS p99_seconds
  FROM outbox
 WHERE processed_at > NOW() - INTERVAL '5 minutes'
 GROUP BY event_type
 ORDER BY event_type;

-- Throughput per minute over the last hour, with the minutes in which nothing was processed (the
-- seed's rate query leaves those out, and a stall is exactly what they show).
-- Healthy: follows the write rate; 0 while "Lifecycle states" shows events due means the pollers are stuck.
-- Plan: index-only scan of outbox_processed over the hour + hash aggregate, merged with 60 minutes;
-- 4.8 ms (cost 3,739). (Joining each minute to the table instead is estimated at cost 11.9 million,
-- which sets JIT compilation off: 226 ms.)
SELECT m.minute,
       COALESCE(c.processed, 0) AS processed,
       ROUND(COALESCE(c.processed, 0) / 60.0, 1) AS per_second
  FROM generate_series(DATE_TRUNC('minute', NOW()) - INTERVAL '59 minutes', DATE_TRUNC('minute', NOW()), INTERVAL '1 minute') AS m(minute)
  LEFT JOIN (SELECT DATE_TRUNC('minute', processed_at) AS minute, COUNT(*) AS processed
               FROM outbox
              WHERE processed_at >= DATE_TRUNC('minute', NOW()) - INTERVAL '59 minutes'
              GROUP BY 1) AS c USING (minute)
 ORDER BY m.minute;

-- Pending by type, split into due now and waiting for a retry; dead letters apart.
-- Healthy: as "Lifecycle states", per type: one type with a retry backlog points at its handler.
-- Plan: parallel append of index scans of outbox_pending, outbox_retry and outbox_dead (heap rows for
-- event_type) + aggregate; 51 ms (cost 4,069) for 50,000 unprocessed rows.
SELECT event_type,
       COUNT(*) FILTER (WHERE dead_at IS NULL AND (retry_at IS NULL OR retry_at <= NOW())) AS due_now,
       COUNT(*) FILTER (WHERE dead_at IS NULL AND retry_at > NOW()) AS waiting_for_retry,
       COUNT(*) FILTER (WHERE dead_at IS NOT NULL) AS dead
  FROM (SELECT event_type, retry_at, dead_at FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL AND retry_at IS NULL
        UNION ALL
        SELECT event_type, retry_at, dead_at FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL AND retry_at IS NOT NULL
        UNION ALL
        SELECT event_type, retry_at, dead_at FROM outbox WHERE dead_at IS NOT NULL) AS unprocessed
 GROUP BY event_type
 ORDER BY event_type;

-- Top errors among failing events: the last error of events waiting for a retry and of dead events.
-- Healthy: no rows. One error on many events is usually one cause (a broker down, a bad deploy).
-- Plan: index scans of outbox_retry and outbox_dead + hash aggregate; 4.8 ms (cost 204).
SELECT LEFT(last_error, 200) AS last_error,
       COUNT(*) AS events,
       COUNT(dead_at) AS dead,
       MIN(event_type) AS an_event_type,
       MAX(COALESCE(dead_at, retry_at)) AS latest
  FROM (SELECT last_error, event_type, dead_at, retry_at FROM outbox
         WHERE processed_at IS NULL AND dead_at IS NULL AND retry_at IS NOT NULL AND last_error IS NOT NULL
        UNION ALL
        SELECT last_error, event_type, dead_at, retry_at FROM outbox WHERE dead_at IS NOT NULL) AS failing
 GROUP BY 1
 ORDER BY events DESC
 LIMIT 10;

-- Dead events, newest first: what `outbox-poller dead` lists; `outbox-poller replay --dead` re-queues them.
-- Healthy: no rows.
-- Plan: backward index scan of outbox_dead, stops after 50 rows; under 0.1 ms (cost 5).
SELECT id, event_id, event_type, entity_id, attempts, LEFT(last_error, 200) AS last_error, dead_at, created_at
  FROM outbox
 WHERE dead_at IS NOT NULL
 ORDER BY dead_at DESC
 LIMIT 50;

-- Queue depth and error rate per hour over the last 24 hours: the two seed queries above in one,
-- bounded in time. Every event created in the last 24 hours is either processed since then, pending
-- or dead, so four index scans find them all without reading older rows.
-- Healthy: still_unprocessed 0 for every hour but the current one; error_rate_percent 0.
-- Plan: parallel append of an index scan of outbox_processed over 24 hours and of outbox_pending,
-- outbox_retry and outbox_dead; 213 ms (cost 26,519) here, where the last 24 hours processed 430,000
-- events: it reads the last day's rows, not the table, and does not grow as older rows accumulate (the
-- seed's two queries: 444 + 419 ms, growing with the table).
SELECT DATE_TRUNC('hour', created_at) AS hour,
       COUNT(*) AS created,
       COUNT(processed_at) AS processed,
       COUNT(*) - COUNT(processed_at) AS still_unprocessed,
       ROUND(COUNT(*) FILTER (WHERE processed_at IS NULL AND created_at < NOW() - INTERVAL '5 minutes') * 100.0 / COUNT(*), 2) AS error_rate_percent
  FROM (SELECT created_at, processed_at FROM outbox WHERE processed_at > NOW() - INTERVAL '24 hours'
        UNION ALL
        SELECT created_at, processed_at FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL AND retry_at IS NULL
        UNION ALL
        SELECT created_at, processed_at FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL AND retry_at IS NOT NULL
        UNION ALL
        SELECT created_at, processed_at FROM outbox WHERE processed_at IS NULL AND dead_at IS NOT NULL) AS recent
 WHERE created_at > NOW() - INTERVAL '24 hours'
 GROUP BY 1
 ORDER BY 1;

-- Replicas connected right now: every outbox-poller connection to this database, named
-- `outbox-poller/<host>/<pid>/<role>` (role worker, supervisor, migrate, capture, status, …), with its
-- state and how long it has been in it. A worker replica holds two connections (claims, and LISTEN).
-- Healthy: two `worker` connections per replica you run; a worker "idle in transaction" (handlers
-- running in its batch) for longer than --handler-timeout plus a few seconds is stuck. Other roles'
-- sessions show their state only to superusers and members of pg_read_all_stats.
-- Plan: pg_stat_activity, no table access; about 1 ms.
SELECT application_name,
       split_part(application_name, '/', 4) AS role,
       pid,
       client_addr,
       state,
       NOW() - state_change AS in_state_for,
       NOW() - backend_start AS connected_for,
       wait_event_type,
       wait_event
  FROM pg_stat_activity
 WHERE application_name LIKE 'outbox-poller/%'
   AND datname = current_database()
 ORDER BY application_name, pid;

-- Dead tuples and vacuums: a queue table is all updates and deletes, so bloat is the thing to watch.
-- Healthy: n_dead_tup a small fraction of n_live_tup, last_autovacuum recent (the migration tunes the
-- outbox's autovacuum to run early).
-- Plan: catalog join; 0.1 ms.
SELECT n_live_tup, n_dead_tup, last_vacuum, last_autovacuum, last_analyze, last_autoanalyze, autovacuum_count
  FROM pg_stat_user_tables
 WHERE relname = 'outbox';

-- Who caused the last hour's events: grouped by the event context (SET LOCAL outbox.actor / correlation_id
-- in the writing transaction), with how many are still pending or dead. Healthy: whatever your traffic
-- looks like; a single actor or correlation id with many dead events points at one bad request or job.
-- Plan: index scan of `outbox_processed` for the hour's processed rows plus the pending and dead indexes;
-- time-bounded, so it follows the recent throughput, not the rows kept.
SELECT metadata->>'actor' AS actor,
       COUNT(*) AS events,
       COUNT(DISTINCT metadata->>'correlation_id') AS correlations,
       COUNT(*) FILTER (WHERE processed_at IS NULL AND dead_at IS NULL) AS pending,
       COUNT(*) FILTER (WHERE dead_at IS NOT NULL) AS dead
  FROM outbox
 WHERE processed_at > NOW() - INTERVAL '1 hour'
    OR (processed_at IS NULL AND created_at > NOW() - INTERVAL '1 hour')
 GROUP BY 1
 ORDER BY events DESC
 LIMIT 20;

-- Captured tables whose capture was lost: dropped, or dropped and re-created without their capture triggers
-- (a DROP TABLE takes the triggers with it, silently), or stripped of them. Healthy: no row. `outbox-poller
-- captures` says the same, with the command that captures each again.
-- Plan: a scan of the small registry, one catalog probe per registered table; well under 1 ms.
SELECT r.table_schema, r.table_name, r.entity, r.captured_at,
       CASE WHEN c.oid IS NULL THEN 'dropped'
            WHEN c.oid <> r.relid THEN 're-created'
            ELSE 'lost its triggers' END AS problem
  FROM outbox_captured r
  LEFT JOIN pg_class c ON c.oid = COALESCE((SELECT oid FROM pg_class WHERE oid = r.relid), to_regclass(format('%I.%I', r.table_schema, r.table_name))::oid)
 WHERE c.oid IS NULL
    OR NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgfoid = 'outbox_capture'::regproc)
 ORDER BY 1, 2;
