/**
 * Finished builds in finish order (list_finished.sql, finished_walk_end.sql): the dashboard's
 * "Finished" list and GET /v1/builds?order=finished. Read from build_events, walked backwards by id,
 * a bounded number of events per page; see the query files for why no index on `builds` is needed.
 */
import type { Build, BuildStatus } from "../core/build.js";
import { queries } from "../generated/assets.js";
import type { Db } from "./db.js";
import { type BuildRow, toBuild } from "./store.js";

/** Events looked at per page at most: a page of a rare status or strategy may come back short. */
export const FINISHED_WALK_EVENTS = 10_000;

export interface FinishedFilter {
  status: BuildStatus | null;
  strategyId: string | null;
  /** Only finishes whose event id is below this (null: the first page). */
  beforeEventId: number | null;
  limit: number;
}

export interface FinishedPage {
  builds: Build[];
  /** The event id the next page starts below; null when the walk reached the first event. */
  nextBeforeEventId: number | null;
}

export async function listFinished(db: Db, filter: FinishedFilter): Promise<FinishedPage> {
  const below = filter.beforeEventId ?? Number.MAX_SAFE_INTEGER;
  const res = await db.query<BuildRow & { finish_event_id: string }>(queries.list_finished, [
    filter.status,
    filter.strategyId,
    below,
    filter.limit,
    FINISHED_WALK_EVENTS,
  ]);
  const builds = res.rows.map(toBuild);
  const last = res.rows.at(-1);
  if (last && res.rows.length === filter.limit) {
    return { builds, nextBeforeEventId: Number(last.finish_event_id) };
  }
  // A short page: either the walk reached the first event (no next page) or its bound.
  const walk = await db.query<{ scanned_to: string | null; walked: number }>(queries.finished_walk_end, [
    below,
    FINISHED_WALK_EVENTS,
  ]);
  const end = walk.rows[0];
  const more = end !== undefined && end.walked >= FINISHED_WALK_EVENTS && end.scanned_to !== null;
  return { builds, nextBeforeEventId: more ? Number(end.scanned_to) : null };
}
