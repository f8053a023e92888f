-- list_workers: registered workers with their heartbeat age (by PostgreSQL's clock) and the builds
-- they hold. Workers that stopped more than an hour ago are left out.
SELECT w.*,
       (EXTRACT(EPOCH FROM (now() - w.last_heartbeat_at)) * 1000)::float8 AS heartbeat_age_ms,
       (SELECT count(*) FROM builds b
        WHERE b.worker_id = w.id AND b.status IN ('running', 'stopping'))::integer AS active_builds
FROM workers w
WHERE w.stopped_at IS NULL OR w.stopped_at > now() - interval '1 hour'
ORDER BY w.started_at, w.id
