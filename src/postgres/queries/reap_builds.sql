-- reap_builds: take back builds whose worker is gone (their lease expired and the reaper confirmed
-- it). Only rows still expired with the same lease change (a late heartbeat or result wins). A
-- running build with retries left goes back to 'queued' with its sequence number (front of its
-- priority), retry_count + 1, and a new lease, so the lost worker can write nothing more; without
-- retries left it fails; a stopping build ends stopped (its stop is what was asked).
-- $1 jsonb: array of {id, lease}
-- $2 text:  reason, recorded as last_error and in the event
WITH input AS (
  SELECT r.id, r.lease FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, lease bigint)
),
old AS (
  SELECT b.id, b.status AS from_status, b.worker_id AS old_worker,
         CASE WHEN b.status = 'stopping' THEN 'stopped'
              WHEN b.retry_count < b.max_retries THEN 'queued'
              ELSE 'failed' END AS to_status
  FROM builds b JOIN input ON b.id = input.id AND b.lease = input.lease
  -- The ids as an array as well: a primary-key lookup whatever the statistics say (complete_builds).
  WHERE b.id = ANY (ARRAY(SELECT i.id FROM input i))
    AND b.status IN ('running', 'stopping') AND b.lease_expires_at < now()
  FOR UPDATE OF b
),
changed AS (
  UPDATE builds b
  SET status           = old.to_status,
      retry_count      = CASE WHEN old.to_status = 'queued' THEN b.retry_count + 1 ELSE b.retry_count END,
      lease            = b.lease + 1,
      worker_id        = CASE WHEN old.to_status = 'queued' THEN NULL ELSE b.worker_id END,
      run_at           = now(),
      delayed          = false,
      lease_expires_at = NULL,
      finished_at      = CASE WHEN old.to_status = 'queued' THEN NULL ELSE now() END,
      last_error       = $2 || ' (worker ' || coalesce(old.old_worker, '?') || ')'
                         || CASE WHEN old.to_status = 'failed'
                                 THEN '; no retries left (' || b.max_retries || ')' ELSE '' END,
      updated_at       = now()
  FROM old
  WHERE b.id = old.id
  RETURNING b.*, old.from_status, old.old_worker
),
events AS (
  INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)
  SELECT id, CASE WHEN status = 'queued' THEN 'requeued' ELSE status END, from_status, status, 'reaper',
         jsonb_build_object('worker', old_worker, 'reason', last_error, 'retryCount', retry_count)
  FROM changed
)
SELECT * FROM changed
