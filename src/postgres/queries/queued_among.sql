-- queued_among: which of these ids are queued builds (the reconciler drops the others from Redis).
-- $1 jsonb: array of build ids
SELECT id FROM builds
WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb)::uuid) AND status = 'queued'
