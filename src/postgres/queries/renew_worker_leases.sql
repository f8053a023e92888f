-- renew_worker_leases: extend the leases of every build of these workers (the reaper found them alive
-- by their Redis heartbeat, though their PostgreSQL heartbeat was late).
-- $1 text[]:  worker ids
-- $2 integer: lease duration, ms
UPDATE builds
SET lease_expires_at = now() + make_interval(secs => $2::float8 / 1000)
WHERE worker_id = ANY ($1::text[]) AND status IN ('running', 'stopping')
