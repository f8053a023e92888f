-- claim_by_ids: the Redis path's claim. Redis proposed these ids (popped from the dispatch index);
-- PostgreSQL arbitrates: only rows still 'queued' are taken, so an id that reappears in Redis (an AOF
-- replay, a reconcile race) or that was claimed on the PostgreSQL path is never run twice, and a
-- build waiting out its retry backoff is not run before its time (build-queue.ts re-indexes it).
-- A build held back by its concurrency key's limit (migration 0011; an entry left in Redis after a
-- limit was lowered) is refused like a stale entry and dropped from the index.
-- Each claim bumps the lease (the fencing token) and records a "claimed" event.
-- A row another transaction has locked is skipped, never waited for: it is being claimed, finished
-- or changed by someone else right now (after a Redis failover two claimers can pop the same ids, a
-- replica's copy of the index lagging behind the old master's pops). Waiting there deadlocked two
-- claims that locked overlapping ids in different orders (one plan walks the primary key, another
-- the heap). A skipped build that is still queued afterwards goes back into the index (claims.ts).
-- `id = ANY(uuid[])` gives the planner the ids, so it looks them up by primary key; `id IN (SELECT
-- jsonb_array_elements_text(...))` made it hash-join against every queued row, even with fresh
-- statistics (a full scan per claim on a queue of 10^4 builds). With stale statistics (just after a
-- burst of submits: they count almost no queued rows) it may still read the queued partial index.
-- The ids are looked up by primary key only: `status || ''` is not `status` to the planner, so no
-- partial index over queued builds can serve the lookup. When the statistics count few queued
-- builds (a drained queue, or any queue whose claims outpace ANALYZE) the planner preferred
-- builds_queued_seq_idx, filtering every entry by id; with the xmin horizon pinned (a long
-- transaction, a replication slot) that index keeps an entry for every build claimed since, and
-- each claim walked all of them: about 5,000 pages and 10 ms per claim after a minute at 1,500
-- builds/s, against some 200 pages by primary key (docs/benchmarks.md, session 12).
-- The UPDATE joins the locked rows by primary key: with `id = ANY (ARRAY(SELECT id FROM takeable))`
-- it scanned the whole table while the table was small and had no statistics yet (a new
-- installation's first thousand builds: 0.25 ms of each claim).
-- $1 uuid[]: build ids
-- $2 text:  worker id
-- $3 integer: lease duration, ms (the worker's heartbeats extend it; the reaper requeues past it)
WITH takeable AS (
  SELECT id FROM builds
  WHERE id = ANY ($1::uuid[]) AND status || '' = 'queued' AND NOT held AND run_at <= now()
  FOR UPDATE SKIP LOCKED
),
claimed AS (
  UPDATE builds
  SET status = 'running', lease = lease + 1, worker_id = $2, phase = NULL,
      started_at = now(), updated_at = now(), progress = NULL,
      lease_expires_at = now() + make_interval(secs => $3::float8 / 1000)
  FROM takeable
  WHERE builds.id = takeable.id
  RETURNING builds.*
),
events AS (
  INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)
  SELECT id, 'claimed', 'queued', 'running', $2, jsonb_build_object('lease', lease) FROM claimed
)
SELECT * FROM claimed ORDER BY priority DESC, seq
