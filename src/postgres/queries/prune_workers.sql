-- prune_workers: forget workers that stopped, or were last heard of, before the cutoff and run
-- nothing (a worker that comes back registers again under its id).
-- $1 integer: stopped or last heard of at least this many milliseconds ago
DELETE FROM workers w
WHERE coalesce(w.stopped_at, w.last_heartbeat_at) < now() - make_interval(secs => $1::float8 / 1000)
  AND NOT EXISTS (SELECT 1 FROM builds b WHERE b.worker_id = w.id AND b.status IN ('running', 'stopping'))
