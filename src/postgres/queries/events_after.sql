-- events_after: the next events of the stream, in id order.
-- An id can be missing for a while (its transaction has not committed yet) or for good (rolled
-- back, a sequence jump after a crash, pruned); the hub's gap rule (src/queue/event-gaps.ts, with
-- event_writers.sql) decides when to step over one.
-- $1 bigint:  after this id
-- $2 integer: at most this many
SELECT e.id, e.build_id, e.type, e.from_status, e.to_status, e.actor, e.data, e.at
FROM build_events e
WHERE e.id > $1
ORDER BY e.id
LIMIT $2
