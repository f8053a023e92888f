-- prune_builds: delete up to $2 finished builds (completed, failed, stopped) that finished before
-- the cutoff, oldest first, with their events. A build another transaction holds (an operator's
-- retry in flight) is skipped, not waited for; a build retried before this statement is no longer
-- finished and is not selected. Deleting a build frees its idempotency key.
-- $1 integer: finished at least this many milliseconds ago
-- $2 integer: at most this many builds
WITH doomed AS (
  SELECT id FROM builds
  WHERE status IN ('completed', 'failed', 'stopped')
    AND finished_at < now() - make_interval(secs => $1::float8 / 1000)
  ORDER BY seq
  LIMIT $2
  FOR UPDATE SKIP LOCKED
),
events AS (
  DELETE FROM build_events e USING doomed d WHERE e.build_id = d.id RETURNING 1
),
gone AS (
  DELETE FROM builds b USING doomed d WHERE b.id = d.id RETURNING 1
)
SELECT (SELECT count(*) FROM gone)::integer AS builds, (SELECT count(*) FROM events)::integer AS events
