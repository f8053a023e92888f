-- pool_requirements: the requirement sets of some pools (the reconciler registers them in Redis).
-- $1 text[]: pool ids
SELECT id, requires FROM build_pools WHERE id = ANY ($1::text[])
