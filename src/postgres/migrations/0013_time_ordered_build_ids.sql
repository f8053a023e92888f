-- 0013: new build ids are time-ordered UUIDs (version 7, RFC 9562) instead of random ones (version 4).
-- A random key scatters every insert into builds_pkey and build_events_build_idx (build_id, id) over
-- the whole of both indexes: each build reads and dirties index pages all over them. A time-ordered
-- key inserts at the right-hand edge, like a sequence, and a claim's or a completion's batch of
-- recent builds finds its rows in a few neighbouring index pages. In the processing phase of the throughput benchmark
-- (`node dist/bench/hot-bound.js`, "product" against "random-ids") that was 7 to 13 % more
-- builds/s (docs/benchmarks.md, session 11).
-- The id stays a uuid with 74 random bits, so ids are still unguessable and unique; its first 48
-- bits are the build's creation time in ms (the creation time is no secret: created_at is public).
-- Older rows keep their ids; nothing reads an id's bits.
-- PostgreSQL 18 has uuidv7(); this is the same layout for the versions before it, and for PGlite.
CREATE FUNCTION time_ordered_uuid() RETURNS uuid
LANGUAGE sql VOLATILE
AS $$
  -- A random version-4 uuid, its first 6 bytes replaced by the Unix time in whole ms, big-endian
  -- (floor: a cast alone would round half a millisecond up into the future), its version nibble
  -- turned from 0100 into 0111 (bits 52 and 53; set_bit counts from each byte's lowest bit). The
  -- variant bits (10) are already those of version 7.
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;

ALTER TABLE builds ALTER COLUMN id SET DEFAULT time_ordered_uuid();
