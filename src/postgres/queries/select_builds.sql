-- select_builds: several builds by id (any order; the caller reorders).
-- $1 jsonb: array of build ids
SELECT * FROM builds WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb)::uuid)
