/** Deleting what the queue no longer needs: finished builds with their events, long-gone workers. */
import { queries } from "../generated/assets.js";
import type { Db } from "./db.js";

export interface PrunedCounts {
  builds: number;
  events: number;
}

/** One batch of prune_builds.sql: up to `limit` finished builds older than the cutoff. */
export async function pruneBuildBatch(db: Db, olderThanMs: number, limit: number): Promise<PrunedCounts> {
  const res = await db.query<PrunedCounts>(queries.prune_builds, [olderThanMs, limit]);
  return { builds: Number(res.rows[0]?.builds ?? 0), events: Number(res.rows[0]?.events ?? 0) };
}

/** Workers stopped or unheard of since before the cutoff, running nothing: the number deleted. */
export async function pruneWorkers(db: Db, olderThanMs: number): Promise<number> {
  return (await db.query(queries.prune_workers, [olderThanMs])).rowCount;
}

/** What a prune would delete now. */
export async function countPrunable(
  db: Db,
  olderThanMs: number,
): Promise<PrunedCounts & { workers: number }> {
  const res = await db.query<{ builds: number; events: number; workers: number }>(queries.prune_count, [
    olderThanMs,
  ]);
  const row = res.rows[0];
  return {
    builds: Number(row?.builds ?? 0),
    events: Number(row?.events ?? 0),
    workers: Number(row?.workers ?? 0),
  };
}
