-- admit_waiting: fit the keys' builds to their limits (migration 0011). Runs in the transaction that
-- locked the keys' concurrency_limits rows (ensure_concurrency_keys.sql, lock_concurrency_keys.sql), as a later statement, so its
-- snapshot sees every admission, claim and end committed before the lock was granted.
-- For each key: slots = max_running - (running + stopping + admitted queued builds of the key).
-- Free slots admit the first held builds of the key whose run time has come (priority, then submit
-- order): held = false, so they enter the dispatch index (the caller puts them into Redis). A key over
-- its limit (the limit was lowered) holds back its last admitted queued builds instead (the caller
-- takes them out of Redis; claim_by_ids.sql refuses held builds, so a stale entry cannot run). Running
-- builds are never touched. The two UPDATEs touch disjoint rows.
-- Rows locked by another transaction are skipped, never waited for: a submit's supersede (or a stop)
-- holds the rows it stops and then takes their keys' locks, so waiting here, with the key locked,
-- could deadlock with it; a row it stops frees its slot anyway (its admission follows), and a row a
-- claimer holds is an admitted build being claimed, which keeps its slot either way.
-- $1 text[]: concurrency keys (their rows locked by this transaction)
-- Returns the changed builds with `admitted` (true: now claimable; false: held back).
WITH slots AS (
  SELECT l.key,
         l.max_running - (SELECT count(*) FROM builds b
                          WHERE b.concurrency_key = l.key AND b.concurrency_key IS NOT NULL
                            AND (b.status IN ('running', 'stopping') OR (b.status = 'queued' AND NOT b.held)))::integer
           AS free
  FROM concurrency_limits l WHERE l.key = ANY ($1::text[])
),
admit AS (
  SELECT w.id FROM slots s
  CROSS JOIN LATERAL (
    SELECT b.id FROM builds b
    WHERE b.concurrency_key = s.key AND b.status = 'queued' AND b.held AND b.run_at <= now()
    ORDER BY b.priority DESC, b.seq
    LIMIT greatest(s.free, 0)
    FOR UPDATE SKIP LOCKED
  ) w
),
excess AS (
  SELECT w.id FROM slots s
  CROSS JOIN LATERAL (
    SELECT b.id FROM builds b
    WHERE b.concurrency_key = s.key AND b.status = 'queued' AND NOT b.held
    ORDER BY b.priority ASC, b.seq DESC
    LIMIT greatest(-s.free, 0)
    FOR UPDATE SKIP LOCKED
  ) w
),
admitted AS (
  UPDATE builds b SET held = false, delayed = false, updated_at = now()
  FROM admit WHERE b.id = admit.id AND b.status = 'queued' AND b.held
  RETURNING b.*, true AS admitted
),
held_back AS (
  UPDATE builds b SET held = true, delayed = false, run_at = greatest(b.run_at, now()), updated_at = now()
  FROM excess WHERE b.id = excess.id AND b.status = 'queued' AND NOT b.held
  RETURNING b.*, false AS admitted
)
SELECT * FROM admitted
UNION ALL
SELECT * FROM held_back
