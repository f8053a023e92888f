-- events_between: a subscriber's missed events (it resumes after $2; the hub has read up to $3).
-- $1 uuid:    one build's events, or null for all builds
-- $2 bigint:  after this id
-- $3 bigint:  up to this id (inclusive)
-- $4 integer: at most this many (the caller pages)
SELECT e.id, e.build_id, e.type, e.from_status, e.to_status, e.actor, e.data, e.at
FROM build_events e
WHERE ($1::uuid IS NULL OR e.build_id = $1::uuid) AND e.id > $2 AND e.id <= $3
ORDER BY e.id
LIMIT $4
