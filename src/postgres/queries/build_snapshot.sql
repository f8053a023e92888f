-- build_snapshot: a build and the id of its newest event, read in one snapshot, so a subscriber
-- that starts from it and takes the build's events after that id misses and repeats nothing.
-- $1 uuid: build id
SELECT b.*, (SELECT coalesce(max(e.id), 0) FROM build_events e WHERE e.build_id = b.id) AS last_event_id
FROM builds b
WHERE b.id = $1
