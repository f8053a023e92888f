-- events_after: the next events of the stream, in id order, with the reader's transaction horizon.
-- An id can be missing for a while (its transaction has not committed yet) or for good (rolled
-- back, pruned). The hub waits for a missing id until every transaction that could hold it has ended:
-- xmin (the oldest running transaction) reaching a transaction id drawn when the gap was first seen
-- (xid_bound.sql).
-- $1 bigint:  after this id
-- $2 integer: at most this many
SELECT e.id, e.build_id, e.type, e.from_status, e.to_status, e.actor, e.data, e.at,
       pg_snapshot_xmin(pg_current_snapshot())::text AS xmin
FROM build_events e
WHERE e.id > $1
ORDER BY e.id
LIMIT $2
