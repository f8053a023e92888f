-- fail_builds: record failures of many builds in one statement. While retries remain (and the failure
-- is retryable) the build goes back to 'queued' with the same sequence number (front of its
-- priority), retry_count + 1, a new lease (so the failed run can write nothing more) and run_at after
-- an exponential backoff: min(max_delay, base_delay * 2^retry_count), delayed (out of the dispatch
-- index until due: migration 0008) when that is above zero. Otherwise it ends 'failed'.
-- A build that was asked to stop ('stopping') ends 'stopped': its run ended because of the stop.
-- Fenced like complete_builds: stale leases change nothing and are absent from the result.
-- $1 jsonb:    array of {id, lease, error, retryable, logTail}
-- $2 integer:  backoff base delay, milliseconds
-- $3 integer:  backoff maximum delay, milliseconds
WITH input AS (
  SELECT r.id, r.lease, r.error, r.retryable, r."logTail"
  FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, lease bigint, error text, retryable boolean, "logTail" text)
),
old AS (
  SELECT b.id, b.status AS from_status, b.worker_id AS old_worker,
         (b.status = 'running' AND input.retryable AND b.retry_count < b.max_retries) AS will_retry
  FROM builds b JOIN input ON b.id = input.id AND b.lease = input.lease
  -- The ids as an array as well: a primary-key lookup whatever the statistics say (complete_builds).
  WHERE b.id = ANY (ARRAY(SELECT i.id FROM input i)) AND b.status IN ('running', 'stopping')
  FOR UPDATE OF b
),
changed AS (
  UPDATE builds b
  SET status      = CASE WHEN old.will_retry THEN 'queued'
                         WHEN old.from_status = 'stopping' THEN 'stopped' ELSE 'failed' END,
      retry_count = CASE WHEN old.will_retry THEN b.retry_count + 1 ELSE b.retry_count END,
      lease       = CASE WHEN old.will_retry THEN b.lease + 1 ELSE b.lease END,
      worker_id   = CASE WHEN old.will_retry THEN NULL ELSE b.worker_id END,
      run_at      = CASE WHEN old.will_retry
                      THEN now() + make_interval(secs => least($3::float8, $2::float8 * power(2, b.retry_count)) / 1000)
                      ELSE b.run_at END,
      delayed     = old.will_retry AND least($3::float8, $2::float8 * power(2, b.retry_count)) > 0,
      finished_at = CASE WHEN old.will_retry THEN NULL ELSE now() END,
      last_error  = input.error,
      log_tail    = coalesce(input."logTail", b.log_tail),
      updated_at  = now()
  FROM old, input
  -- the input row whose lease matched (a stale one for the same build must not supply the error)
  WHERE b.id = old.id AND input.id = old.id AND input.lease = b.lease
  RETURNING b.*, old.from_status, old.old_worker, greatest(0, EXTRACT(EPOCH FROM (b.run_at - now())) * 1000)::float8 AS delay_ms
),
events AS (
  INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)
  SELECT id, CASE WHEN status = 'queued' THEN 'retry_scheduled' ELSE status END, from_status, status,
         coalesce(old_worker, 'unknown'),
         jsonb_build_object('error', last_error, 'retryCount', retry_count, 'runAt', run_at)
  FROM changed
)
SELECT * FROM changed
