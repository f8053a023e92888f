-- renew_worker_leases: extend leases that expired although their worker is alive by its Redis
-- heartbeat (its PostgreSQL heartbeats were late, not the worker). Only the given builds, with their
-- lease: a build the worker does not run any more still expires.
-- $1 jsonb:   [{id, lease}] of builds whose worker's Redis heartbeat is fresh
-- $2 integer: lease duration, ms
UPDATE builds b
SET lease_expires_at = now() + make_interval(secs => $2::float8 / 1000)
FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, lease bigint)
WHERE b.id = r.id AND b.lease = r.lease AND b.status IN ('running', 'stopping')
