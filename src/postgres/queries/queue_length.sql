-- queue_length: queued builds ready to dispatch, and those waiting out a retry backoff; builds held
-- back by their concurrency key's limit (migration 0011) are in neither (count_held.sql counts them),
-- as on Redis, where they are in no set.
SELECT count(*) FILTER (WHERE run_at <= now())::integer AS ready,
       count(*) FILTER (WHERE run_at > now())::integer AS delayed
FROM builds WHERE status = 'queued' AND NOT held
