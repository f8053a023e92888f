-- prune_count: what prune_builds and prune_workers would delete now (a dry run): builds, their events
-- and their stored log bytes (build_logs.bytes), and workers.
-- $1 integer: finished (builds) or last heard of (workers) at least this many milliseconds ago
WITH cutoff AS (SELECT now() - make_interval(secs => $1::float8 / 1000) AS at),
doomed AS (
  SELECT b.id FROM builds b, cutoff
  WHERE b.status IN ('completed', 'failed', 'stopped') AND b.finished_at < cutoff.at
)
SELECT (SELECT count(*) FROM doomed)::integer AS builds,
       (SELECT count(*) FROM build_events e WHERE e.build_id IN (SELECT id FROM doomed))::integer AS events,
       (SELECT coalesce(sum(l.bytes), 0) FROM build_logs l WHERE l.build_id IN (SELECT id FROM doomed))::float8
         AS log_bytes,
       (SELECT count(*) FROM workers w, cutoff
        WHERE coalesce(w.stopped_at, w.last_heartbeat_at) < cutoff.at
          AND NOT EXISTS (SELECT 1 FROM builds b WHERE b.worker_id = w.id AND b.status IN ('running', 'stopping'))
       )::integer AS workers
