-- request_stop: ask a running build to stop. It becomes 'stopping' until its worker acknowledges
-- (its run ends: status 'stopped') or, if the worker is gone, the reaper ends it as 'stopped'.
-- $1 uuid: build id
-- $2 text: who asks
-- $3 text: reason (may be null)
WITH stopping AS (
  UPDATE builds
  SET status = 'stopping', stop_requested_at = now(), stopped_by = $2, stop_reason = $3, updated_at = now()
  WHERE id = $1 AND status = 'running'
  RETURNING *
),
events AS (
  INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)
  SELECT id, 'stop_requested', 'running', 'stopping', $2,
         jsonb_build_object('reason', $3::text, 'lease', lease, 'worker', worker_id)
  FROM stopping
)
SELECT * FROM stopping
