-- events_resume_floor_build: the oldest point one build's event stream may resume after, when a
-- stream replays at most $2 events: the id of the build's ($2 + 1)-th newest event (resuming after it
-- replays exactly $2), or no row when the build has at most $2 events (any resume point is fine).
-- Reads at most $2 + 1 entries of build_events_build_idx (build_id, id), newest first.
-- $1 uuid:    the build
-- $2 integer: how many events a stream replays at most
SELECT e.id
FROM build_events e
WHERE e.build_id = $1::uuid
ORDER BY e.id DESC
OFFSET $2
LIMIT 1
