-- update_progress: a worker's latest progress for a build, fenced by the lease.
-- $1 uuid:  build id
-- $2 bigint: lease
-- $3 jsonb: {phase, percent, iteration, maxIterations, message, at}
UPDATE builds
SET progress = $3::jsonb, phase = coalesce($3::jsonb ->> 'phase', phase), updated_at = now()
WHERE id = $1 AND lease = $2 AND status IN ('running', 'stopping')
RETURNING id
