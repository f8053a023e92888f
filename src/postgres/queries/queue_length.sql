-- queue_length: queued builds ready to dispatch, and those waiting out a retry backoff.
SELECT count(*) FILTER (WHERE run_at <= now())::integer AS ready,
       count(*) FILTER (WHERE run_at > now())::integer AS delayed
FROM builds WHERE status = 'queued'
