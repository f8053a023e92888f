-- analyze_builds: refresh the planner statistics of builds after a burst of submits. Autovacuum
-- analyzes at most once a minute per table and only after 10 % of it changed; until then a table
-- that just received thousands of queued builds is planned as if it had none, and the claim
-- statements read every queued row (benchmarks.md, "Stale planner statistics").
ANALYZE builds
