-- recent_runs_strategy: how long the recent completed runs of one strategy took (for ETAs): the
-- newest 200 submits of the strategy (build_listing_strategy_idx), of which the completed ones.
-- $1 text: strategy id
SELECT coalesce(avg(EXTRACT(EPOCH FROM (b.finished_at - b.started_at))), 0)::float8 AS avg_seconds,
       count(*)::integer AS runs
FROM (SELECT build_id FROM build_listing WHERE strategy_id = $1 ORDER BY seq DESC LIMIT 200) l
JOIN builds b ON b.id = l.build_id
WHERE b.status = 'completed' AND b.started_at IS NOT NULL AND b.finished_at IS NOT NULL
