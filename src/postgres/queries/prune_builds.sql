-- prune_builds: delete up to $2 finished builds (completed, failed, stopped) that finished before
-- the cutoff, oldest first, with their events, log chunks and listing rows. A build another transaction holds (an operator's
-- retry in flight) is skipped, not waited for; a build retried before this statement is no longer
-- finished and is not selected. Deleting a build frees its idempotency key.
-- $1 integer: finished at least this many milliseconds ago
-- $2 integer: at most this many builds
WITH doomed AS (
  -- Oldest first along the listing order (build_listing's primary key), each build by primary key.
  SELECT b.id, b.seq FROM build_listing l JOIN builds b ON b.id = l.build_id
  WHERE b.status IN ('completed', 'failed', 'stopped')
    AND b.finished_at < now() - make_interval(secs => $1::float8 / 1000)
  ORDER BY l.seq
  LIMIT $2
  FOR UPDATE OF b SKIP LOCKED
),
listing AS (
  DELETE FROM build_listing l USING doomed d WHERE l.seq = d.seq
),
events AS (
  DELETE FROM build_events e USING doomed d WHERE e.build_id = d.id RETURNING 1
),
logs AS (
  DELETE FROM build_log_chunks c USING doomed d WHERE c.build_id = d.id
),
log_sizes AS (
  DELETE FROM build_logs l USING doomed d WHERE l.build_id = d.id RETURNING l.bytes
),
gone AS (
  DELETE FROM builds b USING doomed d WHERE b.id = d.id RETURNING 1
)
SELECT (SELECT count(*) FROM gone)::integer AS builds, (SELECT count(*) FROM events)::integer AS events,
       (SELECT coalesce(sum(bytes), 0) FROM log_sizes)::float8 AS log_bytes
