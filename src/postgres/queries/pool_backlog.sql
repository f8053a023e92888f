-- pool_backlog: every known pool with how many queued builds wait in it (ready or delayed), each
-- count an index-only probe of builds_pool_dispatch_idx / builds_delayed_idx per pool. For the
-- unrunnable check (builds held back by a concurrency key's limit are not counted) (a pool no live worker's labels satisfy) and per-pool capacity.
SELECT p.id, p.requires,
       (SELECT count(*) FROM builds b
        WHERE b.status = 'queued' AND NOT b.delayed AND NOT b.held AND b.pool = p.id)::integer
     + (SELECT count(*) FROM builds b
        WHERE b.status = 'queued' AND b.delayed AND b.pool = p.id)::integer AS ready
FROM build_pools p
ORDER BY p.id
