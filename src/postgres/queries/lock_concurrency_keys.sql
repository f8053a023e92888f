-- lock_concurrency_keys: the second statement of an admission (after ensure_concurrency_keys.sql, in
-- the same transaction): locks the keys' concurrency_limits rows FOR UPDATE, in key order (two
-- admissions of overlapping keys lock in the same order: no deadlock). The lock serializes every
-- admission of a key, and admit_waiting.sql, a later statement, counts the key's slots with a
-- snapshot taken after the lock was granted: it sees everything committed by earlier admissions.
-- $1 text[]: concurrency keys, sorted, without duplicates
SELECT key, max_running FROM concurrency_limits WHERE key = ANY ($1::text[]) ORDER BY key FOR UPDATE
