-- count_held: queued builds held back by their concurrency key's limit (migration 0011), for
-- /metrics (oculus_builds_waiting_on_concurrency_limit) and GET /v1/queue. An index-only count of
-- builds_key_held_idx.
SELECT count(*)::integer AS n FROM builds WHERE status = 'queued' AND held
