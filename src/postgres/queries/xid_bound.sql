-- xid_bound: a transaction id assigned now (this statement's own), so larger than the id of every
-- transaction that had one before this call. The event hub closes a gap in the event ids only once
-- every transaction below this bound has ended (see events_after.sql). A snapshot's xmax is not such
-- a bound: it is one past the newest *completed* transaction, and a running one may be above it.
SELECT pg_current_xact_id()::text AS xid
