-- complete_builds: record results of many builds in one statement (group commit).
-- Fenced: a row changes only if the caller's lease is the current one and the build is running or
-- stopping. Rows whose lease is stale are left alone and absent from the result.
-- $1 jsonb: array of {id, lease, result, logTail}
-- $2 boolean: read the changed builds back (every column); false: only done_id, done_lease and
--             done_key, the other columns NULL (a worker that only needs to know it was recorded:
--             reading whole rows back was half of a worker's PostgreSQL client time)
WITH input AS (
  SELECT r.id, r.lease, r.result, r."logTail"
  FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, lease bigint, result jsonb, "logTail" text)
),
done AS (
  UPDATE builds b
  SET status = 'completed', result = input.result, finished_at = now(), updated_at = now(),
      log_tail = coalesce(input."logTail", b.log_tail)
  FROM input
  -- The ids again as an array: the planner then looks them up by primary key, whatever its
  -- statistics say (with "almost no running builds" it read the whole table otherwise).
  WHERE b.id = ANY (ARRAY(SELECT i.id FROM input i))
    AND b.id = input.id AND b.lease = input.lease AND b.status IN ('running', 'stopping')
  RETURNING b.*
),
events AS (
  INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)
  SELECT id, 'completed', 'running', 'completed', coalesce(worker_id, 'unknown'),
         jsonb_build_object('lease', lease)
  FROM done
)
SELECT whole.*, d.id AS done_id, d.lease AS done_lease, d.concurrency_key AS done_key
FROM done d LEFT JOIN LATERAL (SELECT d.*) AS whole ON $2::boolean
