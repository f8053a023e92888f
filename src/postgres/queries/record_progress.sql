-- record_progress: a worker's latest progress for a build, fenced by the lease, as the build's
-- progress and as a "progress" event on the stream. Only the last $4 progress events of a build are
-- kept (a short history: a reconnecting subscriber needs what it missed, not every step of a
-- two-hour build); state-change events are never pruned.
-- The UPDATE locks the build's row before the event draws its id, so the events of one build are
-- committed in id order (the event hub relies on it).
-- $1 uuid:    build id
-- $2 bigint:  lease
-- $3 jsonb:   {phase, percent, iteration, maxIterations, message, at}
-- $4 integer: progress events kept per build
-- Returns the event id; no row when the lease is stale or the build is not running.
WITH updated AS (
  UPDATE builds
  SET progress = $3::jsonb, phase = coalesce($3::jsonb ->> 'phase', phase), updated_at = now()
  WHERE id = $1 AND lease = $2 AND status IN ('running', 'stopping')
  RETURNING id, status, worker_id
),
event AS (
  INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)
  SELECT id, 'progress', status, status, coalesce(worker_id, 'unknown'), $3::jsonb FROM updated
  RETURNING id
),
pruned AS (
  DELETE FROM build_events e
  WHERE EXISTS (SELECT 1 FROM updated)
    AND e.build_id = $1 AND e.type = 'progress'
    AND e.id <= (SELECT p.id FROM build_events p
                 WHERE p.build_id = $1 AND p.type = 'progress'
                 ORDER BY p.id DESC OFFSET $4 LIMIT 1)
)
SELECT id FROM event
