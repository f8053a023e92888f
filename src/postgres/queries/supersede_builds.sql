-- supersede_builds: "latest wins" (submit with supersede: true). In the submit's transaction, after
-- the insert: the still-queued builds of the same strategy submitted before the newest of these new
-- builds are stopped, with a 'superseded' event naming the build that superseded them. Running and
-- stopping builds are untouched; the pool and the concurrency key do not matter (a strategy's newer
-- build replaces every older one still waiting). A queued row a claimer is taking is waited for, and
-- re-checked: if the claim committed, the build runs and is left alone.
-- Reads the strategy's queued builds through builds_queued_seq_idx: its cost grows with the queue.
-- $1 uuid[]: the new builds submitted with supersede
-- $2 text:   actor
WITH newest AS (
  SELECT DISTINCT ON (strategy_id) strategy_id, id, seq FROM builds
  WHERE id = ANY ($1::uuid[])
  ORDER BY strategy_id, seq DESC
),
stopped AS (
  UPDATE builds b
  SET status = 'stopped', held = false, finished_at = now(), updated_at = now(),
      last_error = 'superseded by ' || newest.id, stop_requested_at = now(), stopped_by = $2,
      stop_reason = 'superseded by ' || newest.id
  FROM newest
  WHERE b.strategy_id = newest.strategy_id AND b.status = 'queued' AND b.seq < newest.seq
  RETURNING b.*, newest.id AS superseded_by
),
events AS (
  INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)
  SELECT id, 'superseded', 'queued', 'stopped', $2, jsonb_build_object('supersededBy', superseded_by)
  FROM stopped
)
SELECT * FROM stopped
