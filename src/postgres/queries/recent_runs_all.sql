-- recent_runs_all: how long the recent completed runs of any strategy took (for ETAs, when a strategy
-- has too little history of its own): the newest 200 submits (build_listing_pkey), of which the
-- completed ones.
SELECT coalesce(avg(EXTRACT(EPOCH FROM (b.finished_at - b.started_at))), 0)::float8 AS avg_seconds,
       count(*)::integer AS runs
FROM (SELECT build_id FROM build_listing ORDER BY seq DESC LIMIT 200) l
JOIN builds b ON b.id = l.build_id
WHERE b.status = 'completed' AND b.started_at IS NOT NULL AND b.finished_at IS NOT NULL
