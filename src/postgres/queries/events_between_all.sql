-- events_between_all: a subscriber's missed events, all builds (it resumes after $1; the hub has read
-- up to $2). A statement of its own rather than a nullable build id: the queries run as prepared
-- statements, and after five runs PostgreSQL may plan one generically, when `$n IS NULL OR ...` can
-- use no index for the build (events_between_build.sql).
-- $1 bigint:  after this id
-- $2 bigint:  up to this id (inclusive)
-- $3 integer: at most this many (the caller pages)
SELECT e.id, e.build_id, e.type, e.from_status, e.to_status, e.actor, e.data, e.at
FROM build_events e
WHERE e.id > $1 AND e.id <= $2
ORDER BY e.id
LIMIT $3
