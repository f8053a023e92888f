-- expired_leases: running or stopping builds whose lease has expired (candidates for the reaper).
-- $1 integer: at most this many
SELECT id, lease, worker_id,
       (EXTRACT(EPOCH FROM (now() - lease_expires_at)) * 1000)::float8 AS expired_ms
FROM builds
WHERE status IN ('running', 'stopping') AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT $1
