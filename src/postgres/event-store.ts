/**
 * The event stream's reads and the progress writes (`build_events`), mapped to the stream's model
 * here and nowhere else.
 */
import type { Build, BuildProgress, BuildStatus } from "../core/build.js";
import { type BuildEvent, streamTypeOf } from "../core/events.js";
import { queries } from "../generated/assets.js";
import type { Db } from "./db.js";
import { type BuildRow, toBuild } from "./store.js";

interface EventRow {
  id: string;
  build_id: string;
  type: string;
  from_status: BuildStatus | null;
  to_status: BuildStatus | null;
  actor: string;
  data: Record<string, unknown> | null;
  at: Date;
}

/** A transaction that holds RowExclusiveLock on `build_events`: it may be inserting an event. */
export interface EventWriter {
  /** Its virtual transaction id (pg_locks.virtualtransaction). */
  vxid: string;
  /** Its backend's pid, for the log (null for a prepared transaction). */
  pid: number | null;
}

export function toEvent(row: EventRow): BuildEvent {
  const event: BuildEvent = {
    kind: "event",
    id: String(row.id),
    buildId: row.build_id,
    type: streamTypeOf(row.type, row.to_status),
    event: row.type,
    status: row.to_status,
    fromStatus: row.from_status,
    actor: row.actor,
    at: row.at.toISOString(),
    data: row.type === "progress" ? null : row.data,
  };
  if (row.type === "progress" && row.data) event.progress = row.data as unknown as BuildProgress;
  return event;
}

export class EventStore {
  constructor(private readonly db: Db) {}

  /** Fenced progress write; the new event's id, or undefined when the lease is stale. */
  async recordProgress(
    id: string,
    lease: number,
    progress: BuildProgress,
    keep: number,
  ): Promise<number | undefined> {
    // Progress is the most frequent write and the least precious: a database crash may lose the last
    // few hundred milliseconds of it (the build then shows a slightly older step), never a state
    // change. So its commit does not wait for the WAL flush; the next state change's commit flushes it.
    const res = await this.db.transaction(async (tx) => {
      await tx.query("SET LOCAL synchronous_commit TO off");
      return tx.query<{ id: string }>(queries.record_progress, [id, lease, JSON.stringify(progress), keep]);
    });
    return res.rows[0] ? Number(res.rows[0].id) : undefined;
  }

  async after(afterId: number, limit: number): Promise<BuildEvent[]> {
    const res = await this.db.query<EventRow>(queries.events_after, [afterId, limit]);
    return res.rows.map(toEvent);
  }

  /** The transactions that may be inserting events right now (event_writers.sql; event-gaps.ts). */
  async writers(): Promise<EventWriter[]> {
    const res = await this.db.query<{ vxid: string; pid: number | null }>(queries.event_writers);
    return res.rows.map((r) => ({ vxid: r.vxid, pid: r.pid }));
  }

  /** Events after `afterId` up to `uptoId`, of one build or of all (two statements: see the files). */
  async between(
    buildId: string | undefined,
    afterId: number,
    uptoId: number,
    limit: number,
  ): Promise<BuildEvent[]> {
    const res =
      buildId === undefined
        ? await this.db.query<EventRow>(queries.events_between_all, [afterId, uptoId, limit])
        : await this.db.query<EventRow>(queries.events_between_build, [buildId, afterId, uptoId, limit]);
    return res.rows.map(toEvent);
  }

  /**
   * The oldest id one build's stream may resume after when a stream replays at most `maxEvents`
   * (events_resume_floor_build.sql); 0 when the build has no more events than that.
   */
  async buildResumeFloor(buildId: string, maxEvents: number): Promise<number> {
    const res = await this.db.query<{ id: string }>(queries.events_resume_floor_build, [buildId, maxEvents]);
    return Number(res.rows[0]?.id ?? 0);
  }

  async head(): Promise<number> {
    const res = await this.db.query<{ id: string }>(queries.events_head);
    return Number(res.rows[0]?.id ?? 0);
  }

  /** The build and the id of its newest event, from one snapshot; undefined if unknown. */
  async buildSnapshot(id: string): Promise<{ build: Build; lastEventId: number } | undefined> {
    const res = await this.db.query<BuildRow & { last_event_id: string }>(queries.build_snapshot, [id]);
    const row = res.rows[0];
    return row ? { build: toBuild(row), lastEventId: Number(row.last_event_id) } : undefined;
  }

  async activeBuilds(limit: number): Promise<Build[]> {
    const res = await this.db.query<BuildRow>(queries.active_builds, [limit]);
    return res.rows.map(toBuild);
  }

  async statusCounts(): Promise<Record<BuildStatus, number>> {
    const res = await this.db.query<{ status: BuildStatus; n: string }>(queries.status_counts);
    const counts: Record<BuildStatus, number> = {
      queued: 0,
      running: 0,
      stopping: 0,
      completed: 0,
      failed: 0,
      stopped: 0,
    };
    for (const row of res.rows) counts[row.status] = Number(row.n);
    return counts;
  }

  /** Tells every process's hub that events were committed (LISTEN/NOTIFY). */
  async notify(channel: string, payload: string): Promise<void> {
    await this.db.query(queries.notify, [channel, payload]);
  }
}
