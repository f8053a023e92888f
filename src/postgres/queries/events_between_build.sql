-- events_between_build: a subscriber's missed events of one build (it resumes after $2; the hub has
-- read up to $3), along build_events_build_idx (build_id, id) whatever the plan cache does (see
-- events_between_all.sql).
-- $1 uuid:    the build
-- $2 bigint:  after this id
-- $3 bigint:  up to this id (inclusive)
-- $4 integer: at most this many (the caller pages)
SELECT e.id, e.build_id, e.type, e.from_status, e.to_status, e.actor, e.data, e.at
FROM build_events e
WHERE e.build_id = $1::uuid AND e.id > $2 AND e.id <= $3
ORDER BY e.id
LIMIT $4
