-- remove_queued: take a queued build out of the queue for good (status 'stopped').
-- $1 uuid: build id
-- $2 text: actor
-- $3 text: reason (may be null)
WITH removed AS (
  UPDATE builds
  SET status = 'stopped', finished_at = now(), updated_at = now(), last_error = $3,
      stop_requested_at = now(), stopped_by = $2, stop_reason = $3
  WHERE id = $1 AND status = 'queued'
  RETURNING *
),
events AS (
  INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)
  SELECT id, 'removed', 'queued', 'stopped', $2, jsonb_build_object('reason', $3::text) FROM removed
)
SELECT * FROM removed
