-- renew_worker_leases: extend leases that expired although their worker is alive by its Redis
-- heartbeat (its PostgreSQL heartbeats were late, not the worker). Only the given builds, with their
-- lease: a build the worker does not run any more still expires.
-- $1 jsonb:   [{id, lease}] of builds whose worker's Redis heartbeat is fresh
-- $2 integer: lease duration, ms
WITH input AS (
  SELECT r.id, r.lease FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, lease bigint)
)
UPDATE builds b
SET lease_expires_at = now() + make_interval(secs => $2::float8 / 1000)
FROM input
-- The ids as an array as well: a primary-key lookup whatever the statistics say (complete_builds).
WHERE b.id = ANY (ARRAY(SELECT i.id FROM input i))
  AND b.id = input.id AND b.lease = input.lease AND b.status IN ('running', 'stopping')
