-- select_by_idempotency_keys: the builds already submitted under these idempotency keys.
-- $1 jsonb: array of keys
SELECT * FROM builds
WHERE idempotency_key IN (SELECT jsonb_array_elements_text($1::jsonb))
