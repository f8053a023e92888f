-- expired_leases: running or stopping builds whose lease has expired (candidates for the reaper),
-- with how long ago their worker's last PostgreSQL heartbeat was (null: no such worker).
-- $1 integer: at most this many
SELECT b.id, b.lease, b.worker_id,
       (EXTRACT(EPOCH FROM (now() - w.last_heartbeat_at)) * 1000)::float8 AS worker_heartbeat_age_ms
FROM builds b LEFT JOIN workers w ON w.id = b.worker_id
WHERE b.status IN ('running', 'stopping') AND b.lease_expires_at < now()
ORDER BY b.lease_expires_at
LIMIT $1
