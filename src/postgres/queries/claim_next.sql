-- claim_next: the PostgreSQL path's claim, in dispatch order (priority first, then submit order).
-- SKIP LOCKED lets concurrent claimers take different rows without waiting on each other.
-- $1 integer: how many builds at most
-- $2 text:    worker id
-- $3 integer: lease duration, ms (the worker's heartbeats extend it; the reaper requeues past it)
WITH picked AS (
  SELECT id FROM builds
  WHERE status = 'queued' AND run_at <= now()
  ORDER BY priority DESC, seq
  LIMIT $1
  FOR UPDATE SKIP LOCKED
),
claimed AS (
  UPDATE builds b
  SET status = 'running', lease = b.lease + 1, worker_id = $2, phase = NULL,
      started_at = now(), updated_at = now(), progress = NULL,
      lease_expires_at = now() + make_interval(secs => $3::float8 / 1000)
  FROM picked WHERE b.id = picked.id
  RETURNING b.*
),
events AS (
  INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)
  SELECT id, 'claimed', 'queued', 'running', $2, jsonb_build_object('lease', lease) FROM claimed
)
SELECT * FROM claimed ORDER BY priority DESC, seq
