-- status_counts: how many builds are in each status (a full count: for monitoring, not hot paths).
SELECT status, count(*)::bigint AS n FROM builds GROUP BY status
