-- claim_by_ids: the Redis path's claim. Redis proposed these ids (popped from the dispatch index);
-- PostgreSQL arbitrates: only rows still 'queued' are taken, so an id that reappears in Redis (an AOF
-- replay, a reconcile race) or that was claimed on the PostgreSQL path is never run twice.
-- Each claim bumps the lease (the fencing token) and records a "claimed" event.
-- $1 jsonb: array of build ids
-- $2 text:  worker id
WITH claimed AS (
  UPDATE builds
  SET status = 'running', lease = lease + 1, worker_id = $2, phase = NULL,
      started_at = now(), updated_at = now()
  WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb)::uuid) AND status = 'queued'
  RETURNING *
),
events AS (
  INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)
  SELECT id, 'claimed', 'queued', 'running', $2, jsonb_build_object('lease', lease) FROM claimed
)
SELECT * FROM claimed ORDER BY priority DESC, seq
