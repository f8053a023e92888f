-- select_build: one build by id.
-- $1 uuid: build id
SELECT * FROM builds WHERE id = $1
