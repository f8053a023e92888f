-- count_queued: all queued builds in the dispatch index (ready and delayed; not those held back by
-- their concurrency key's limit, migration 0011), for the reconciler's cheap drift check.
SELECT count(*)::integer AS n FROM builds WHERE status = 'queued' AND NOT held
