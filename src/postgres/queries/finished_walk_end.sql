-- finished_walk_end: where list_finished.sql's bounded walk stopped, for a page that came back short:
-- the lowest event id it looked at (the next page's cursor) and how many events it looked at (fewer
-- than the bound: the walk reached the first event, there is no next page). Same walk, ids only.
-- $1 bigint:  only events with an id below this (as list_finished's $3)
-- $2 integer: at most this many events looked at (as list_finished's $5)
SELECT min(id) AS scanned_to, count(*)::int AS walked
FROM (SELECT id FROM build_events WHERE id < $1::bigint ORDER BY id DESC LIMIT $2) w
