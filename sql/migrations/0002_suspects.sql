-- Poison-event isolation. When a worker process dies while handling a batch, its supervisor charges an
-- attempt to the batch's unprocessed events and marks them suspect: a suspect is claimed alone, in a batch
-- of one, by every replica, so the event that kills workers is found and dead-lettered after --max-attempts
-- while its innocent batch-mates are handled normally.
ALTER TABLE {{outbox}} ADD COLUMN suspect boolean NOT NULL DEFAULT false;

CREATE INDEX {{name:_suspect}} ON {{outbox}} (retry_at)
  WHERE processed_at IS NULL AND dead_at IS NULL AND suspect;
