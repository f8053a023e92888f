-- claim_next: the PostgreSQL path's claim, in dispatch order (priority first, then submit order),
-- among the pools whose requirements the worker's labels include (migration 0010).
-- The pools come from the registry (build_pools, `requires <@ labels`); each pool's head is read
-- through builds_pool_dispatch_idx (pool, priority DESC, seq), at most $1 rows per pool, and the best
-- $1 of them are taken: exact order among the builds this worker can run, and no read of the builds
-- of pools it cannot run (a GPU backlog costs a CPU worker nothing).
-- SKIP LOCKED lets concurrent claimers take different rows without waiting on each other.
-- Builds waiting out a retry backoff are not in the dispatch index (migration 0008), so a claim reads
-- only ready builds, however many retries wait. Those whose time has come ("due": one probe of
-- builds_delayed_idx when there are none) are taken together with the ready ones, in dispatch order;
-- the due ones this claim does not take become ready (delayed = false) in the same statement. So a
-- due build is never passed over by this claim, and the next claims find it in the dispatch index.
-- The two UPDATEs touch disjoint rows (a row updated twice by one statement would keep one change).
-- Builds held back by their concurrency key's limit (migration 0011) are in no dispatch index and are
-- never taken: only admitted builds are claimable, and admission keeps every key within its limit.
-- $1 integer: how many builds at most
-- $2 text:    worker id
-- $3 integer: lease duration, ms (the worker's heartbeats extend it; the reaper requeues past it)
-- $4 jsonb:   the worker's labels ({} runs only builds without requirements)
WITH pools AS (
  SELECT id FROM build_pools WHERE requires <@ $4::jsonb
),
due AS (
  SELECT id, priority, seq FROM builds
  WHERE status = 'queued' AND delayed AND NOT held AND run_at <= now() AND pool IN (SELECT id FROM pools)
  FOR UPDATE SKIP LOCKED
),
ready AS (
  SELECT r.id, r.priority, r.seq
  FROM pools p
  CROSS JOIN LATERAL (
    SELECT id, priority, seq FROM builds
    WHERE status = 'queued' AND NOT delayed AND NOT held AND pool = p.id
    ORDER BY priority DESC, seq
    LIMIT $1
    FOR UPDATE SKIP LOCKED
  ) r
),
picked AS (
  SELECT c.id FROM (SELECT * FROM due UNION ALL SELECT * FROM ready) c
  ORDER BY c.priority DESC, c.seq
  LIMIT $1
),
promoted AS (
  UPDATE builds b SET delayed = false
  FROM due
  WHERE b.id = due.id AND due.id NOT IN (SELECT p.id FROM picked p)
),
claimed AS (
  UPDATE builds b
  SET status = 'running', delayed = false, lease = b.lease + 1, worker_id = $2, phase = NULL,
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
