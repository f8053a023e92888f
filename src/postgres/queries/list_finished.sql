-- list_finished: finished builds (completed, failed, stopped) in finish order, newest first, for the
-- dashboard and GET /v1/builds?order=finished. A build's finish is the event that took it to its
-- final status; events are walked backwards by id (the primary key), so no index on `builds` is
-- needed (every status change would pay for one, see migration 0007). Each candidate event joins its
-- build by primary key and counts only if it is the build's current finish: the build is in that
-- status and its finished_at is the event's time (the same statement wrote both, with one now()), so
-- a build that failed, was retried and then completed is listed once, at its last finish.
-- The walk is bounded: at most $5 events are looked at per call (progress events sit between
-- finishes), so a rare status or strategy costs a bounded read per page and the page may come back
-- short; finished_walk_end.sql then says where the walk stopped (the next page's cursor).
-- $1 text:    status (completed, failed, stopped), or null for any of them (a filter on found rows)
-- $2 text:    strategy id, or null for any (a filter on found rows)
-- $3 bigint:  only events with an id below this (the first page: above every id)
-- $4 integer: at most this many builds
-- $5 integer: at most this many events looked at
WITH walked AS (
  SELECT e.id, e.build_id, e.to_status, e.at
  FROM build_events e
  WHERE e.id < $3::bigint
  ORDER BY e.id DESC
  LIMIT $5
)
SELECT w.id AS finish_event_id, b.*
FROM walked w JOIN builds b ON b.id = w.build_id
WHERE w.to_status IN ('completed', 'failed', 'stopped')
  AND b.status = w.to_status AND b.finished_at = w.at
  AND ($1::text IS NULL OR b.status = $1::text)
  AND ($2::text IS NULL OR b.strategy_id = $2::text)
ORDER BY w.id DESC
LIMIT $4
