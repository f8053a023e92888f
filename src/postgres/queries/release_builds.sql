-- release_builds: a worker shutting down hands builds back (it could not finish them within its
-- drain timeout). They return to 'queued' with their sequence number and a new lease; this is not a
-- failure of the build, so retry_count stays.
-- $1 jsonb: array of {id, lease}
-- $2 text:  worker id
WITH input AS (
  SELECT r.id, r.lease FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, lease bigint)
),
released AS (
  UPDATE builds b
  SET status = 'queued', delayed = false, lease = b.lease + 1, worker_id = NULL, run_at = now(),
      lease_expires_at = NULL, updated_at = now()
  FROM input
  -- The ids as an array as well: a primary-key lookup whatever the statistics say (complete_builds).
  WHERE b.id = ANY (ARRAY(SELECT i.id FROM input i))
    AND b.id = input.id AND b.lease = input.lease AND b.status = 'running' AND b.worker_id = $2
  RETURNING b.*
),
events AS (
  INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)
  SELECT id, 'released', 'running', 'queued', $2, jsonb_build_object('reason', 'worker shutdown')
  FROM released
)
SELECT * FROM released
