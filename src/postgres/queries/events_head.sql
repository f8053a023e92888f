-- events_head: the newest event id (where a starting hub begins reading).
SELECT coalesce(max(id), 0) AS id FROM build_events
