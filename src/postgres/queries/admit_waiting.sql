-- admit_waiting: fit the keys' builds to their limits (migration 0011). Runs in the transaction that
-- locked the keys' concurrency_limits rows (ensure_concurrency_keys.sql, lock_concurrency_keys.sql), as
-- a later statement, so its snapshot sees every admission, claim and end committed before the lock
-- was granted.
-- Per key, `room` = max_running - (running + stopping + admitted builds waiting out a retry backoff):
-- the slots for ready builds. They go to the first `room` of the key's ready candidates in dispatch
-- order (priority, then submit order): its admitted ready builds and its held builds whose run time
-- has come. So the key's order is exact: a build admitted into a free slot gives it back when a build
-- of the key that comes first in order arrives before it was claimed.
-- Admitted ready builds outside that set are held back (the caller takes them out of Redis;
-- claim_by_ids.sql refuses held builds, so a stale entry cannot run), held ones inside it are admitted
-- (the caller puts them into Redis), but only into slots actually free after the hold-backs: a build
-- a claimer is taking at this moment is not held back (its row is locked, or already running), and
-- then it keeps its slot and nothing is admitted in its place. Running builds are never touched.
-- Rows locked by another transaction are skipped, never waited for: a submit's supersede (or a stop)
-- holds the rows it stops and then takes their keys' locks, so waiting here, with the key locked,
-- could deadlock with it; a row it stops frees its slot anyway (its admission follows).
-- $1 text[]: concurrency keys (their rows locked by this transaction)
-- Returns the changed builds with `admitted` (true: now claimable; false: held back).
WITH room AS (
  SELECT l.key,
         l.max_running - (SELECT count(*) FROM builds b
                          WHERE b.concurrency_key = l.key AND b.concurrency_key IS NOT NULL
                            AND (b.status IN ('running', 'stopping') OR (b.status = 'queued' AND NOT b.held))
                            AND (b.status <> 'queued' OR b.delayed))::integer AS slots
  FROM concurrency_limits l WHERE l.key = ANY ($1::text[])
),
ready AS (
  -- The key's admitted ready builds (at most its limit of them: a few index entries).
  SELECT b.id, b.concurrency_key AS key, b.priority, b.seq, false AS held
  FROM room r JOIN builds b ON b.concurrency_key = r.key
  WHERE b.concurrency_key IS NOT NULL
    AND (b.status IN ('running', 'stopping') OR (b.status = 'queued' AND NOT b.held))
    AND b.status = 'queued' AND NOT b.delayed
),
waiting AS (
  SELECT w.id, r.key, w.priority, w.seq, true AS held FROM room r
  CROSS JOIN LATERAL (
    SELECT b.id, b.priority, b.seq FROM builds b
    WHERE b.concurrency_key = r.key AND b.status = 'queued' AND b.held AND b.run_at <= now()
    ORDER BY b.priority DESC, b.seq
    LIMIT greatest(r.slots, 0)
    FOR UPDATE SKIP LOCKED
  ) w
),
ranked AS (
  SELECT c.*, row_number() OVER (PARTITION BY c.key ORDER BY c.priority DESC, c.seq) AS place
  FROM (SELECT * FROM ready UNION ALL SELECT * FROM waiting) c
),
excess AS (
  SELECT b.id FROM builds b
  WHERE b.id IN (SELECT k.id FROM ranked k JOIN room r ON r.key = k.key WHERE NOT k.held AND k.place > r.slots)
  FOR UPDATE SKIP LOCKED
),
held_back AS (
  UPDATE builds b SET held = true, updated_at = now()
  FROM excess WHERE b.id = excess.id AND b.status = 'queued' AND NOT b.held AND NOT b.delayed
  RETURNING b.*, false AS admitted
),
free AS (
  SELECT r.key,
         r.slots - (SELECT count(*) FROM ready a WHERE a.key = r.key)::integer
                 + (SELECT count(*) FROM held_back h WHERE h.concurrency_key = r.key)::integer AS n
  FROM room r
),
admit AS (
  SELECT k.id FROM ranked k JOIN free f ON f.key = k.key
  WHERE k.held AND k.place <= (SELECT r.slots FROM room r WHERE r.key = k.key)
    AND (SELECT count(*) FROM ranked k2
         WHERE k2.key = k.key AND k2.held AND k2.place <= k.place) <= f.n
),
admitted AS (
  UPDATE builds b SET held = false, delayed = false, updated_at = now()
  FROM admit WHERE b.id = admit.id AND b.status = 'queued' AND b.held
  RETURNING b.*, true AS admitted
)
SELECT * FROM admitted
UNION ALL
SELECT * FROM held_back
