-- heartbeat_worker: the worker is alive. Records the heartbeat and extends the leases of the builds
-- it still holds; returns those builds (id, lease), so the worker can abandon any build that was
-- taken from it (requeued by the reaper, or stopped).
-- $1 text:    worker id
-- $2 integer: lease duration, ms
WITH beat AS (
  UPDATE workers SET last_heartbeat_at = now() WHERE id = $1
),
renewed AS (
  UPDATE builds
  SET lease_expires_at = now() + make_interval(secs => $2::float8 / 1000)
  WHERE worker_id = $1 AND status IN ('running', 'stopping')
  RETURNING id, lease
)
SELECT id, lease FROM renewed
