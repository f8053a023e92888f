-- register_worker: a worker announces itself (again, after a restart with the same id).
-- $1 text: id   $2 text: hostname   $3 integer: pid   $4 integer: capacity   $5 jsonb: labels
-- $6 text: version
INSERT INTO workers (id, hostname, pid, capacity, labels, version)
VALUES ($1, $2, $3, $4, $5::jsonb, $6)
ON CONFLICT (id) DO UPDATE
SET hostname = excluded.hostname, pid = excluded.pid, capacity = excluded.capacity,
    labels = excluded.labels, version = excluded.version, started_at = now(),
    last_heartbeat_at = now(), stopped_at = NULL
RETURNING *
