/** Deleting what the queue no longer needs: finished builds with their events, long-gone workers. */
import { queries } from "../generated/assets.js";
import type { Db } from "./db.js";

export interface PrunedCounts {
  builds: number;
  events: number;
  /** Bytes of build logs (their stored chunks) deleted with the builds. */
  logBytes: number;
}

type PrunedRow = { builds: number; events: number; log_bytes: number };

function prunedCounts(row: PrunedRow | undefined): PrunedCounts {
  return {
    builds: Number(row?.builds ?? 0),
    events: Number(row?.events ?? 0),
    logBytes: Number(row?.log_bytes ?? 0),
  };
}

/** One batch of prune_builds.sql: up to `limit` finished builds older than the cutoff. */
export async function pruneBuildBatch(db: Db, olderThanMs: number, limit: number): Promise<PrunedCounts> {
  const res = await db.query<PrunedRow>(queries.prune_builds, [olderThanMs, limit]);
  return prunedCounts(res.rows[0]);
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
  const res = await db.query<PrunedRow & { workers: number }>(queries.prune_count, [olderThanMs]);
  return { ...prunedCounts(res.rows[0]), workers: Number(res.rows[0]?.workers ?? 0) };
}
