-- heartbeat_worker: the worker is alive. Records the heartbeat and extends the leases of the builds
-- it says it is running (only those: a build recorded under its id that it does not know of, e.g.
-- from an earlier run of a worker with the same id, or a claim whose answer never reached it, is
-- left to expire and be reaped); returns which of them it still holds (id, lease), so the worker can
-- abandon any build that was taken from it (requeued by the reaper), and stop those asked to stop
-- (status 'stopping': the flag that makes a missed stop message no lost stop).
-- $1 text:    worker id
-- $2 integer: lease duration, ms
-- $3 jsonb:   the builds the worker is running, [{id, lease}]
WITH beat AS (
  UPDATE workers SET last_heartbeat_at = now() WHERE id = $1
),
running AS (
  SELECT r.id, r.lease FROM jsonb_to_recordset($3::jsonb) AS r(id uuid, lease bigint)
),
renewed AS (
  UPDATE builds b
  SET lease_expires_at = now() + make_interval(secs => $2::float8 / 1000)
  FROM running
  -- The ids as an array as well: a primary-key lookup whatever the statistics say (complete_builds).
  WHERE b.id = ANY (ARRAY(SELECT r.id FROM running r))
    AND b.id = running.id AND b.lease = running.lease AND b.worker_id = $1
    AND b.status IN ('running', 'stopping')
  RETURNING b.id, b.lease, b.status
)
SELECT id, lease, status FROM renewed
