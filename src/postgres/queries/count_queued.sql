-- count_queued: all queued builds (ready and delayed), for the reconciler's cheap drift check.
SELECT count(*)::integer AS n FROM builds WHERE status = 'queued'
