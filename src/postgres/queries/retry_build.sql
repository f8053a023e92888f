-- retry_build: an operator runs a failed or stopped build again. It returns to 'queued' with its
-- sequence number (front of its priority, like automatic retries), a fresh set of retries, a new
-- lease (anything still running for it can write nothing), and its outcome cleared.
-- A build with a concurrency key comes back held (migration 0011): admission gives it a slot.
-- $1 uuid: build id
-- $2 text: who asks
WITH old AS (
  SELECT id, status AS from_status FROM builds
  WHERE id = $1 AND status IN ('failed', 'stopped')
  FOR UPDATE
),
retried AS (
  UPDATE builds b
  SET status = 'queued', delayed = false, held = b.concurrency_key IS NOT NULL, retry_count = 0, lease = b.lease + 1, worker_id = NULL, run_at = now(),
      started_at = NULL, finished_at = NULL, lease_expires_at = NULL, result = NULL, last_error = NULL,
      progress = NULL, phase = NULL, log_tail = NULL, stop_requested_at = NULL, stopped_by = NULL,
      stop_reason = NULL, updated_at = now()
  FROM old
  WHERE b.id = old.id
  RETURNING b.*, old.from_status
),
events AS (
  INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)
  SELECT id, 'retried', from_status, 'queued', $2, jsonb_build_object('lease', lease) FROM retried
)
SELECT * FROM retried
