/**
 * The PostgreSQL record of workers, leases and progress: registration, heartbeats (which extend the
 * leases of the builds a worker holds), the reaper's queries, and fenced progress updates. One method
 * per query file.
 */
import type { Build } from "../core/build.js";
import { queries } from "../generated/assets.js";
import type { Db, Queryable } from "./db.js";
import { type BuildRow, toBuild } from "./store.js";

export interface WorkerInfo {
  id: string;
  hostname: string;
  pid: number;
  capacity: number;
  labels: Record<string, string>;
  version: string;
}

export interface WorkerRecord extends WorkerInfo {
  startedAt: Date;
  lastHeartbeatAt: Date;
  /** Age of the last heartbeat PostgreSQL received, by its own clock. */
  heartbeatAgeMs: number;
  stoppedAt: Date | null;
  activeBuilds: number;
}

interface WorkerRow {
  id: string;
  hostname: string;
  pid: number;
  capacity: number;
  labels: Record<string, string>;
  version: string;
  started_at: Date;
  last_heartbeat_at: Date;
  stopped_at: Date | null;
  heartbeat_age_ms: number;
  active_builds: number;
}

export interface HeldBuild {
  id: string;
  lease: number;
}

/** A build a worker still holds, and whether someone asked it to stop. */
export interface HeldStatus extends HeldBuild {
  stopRequested: boolean;
}

export interface ExpiredLease extends HeldBuild {
  workerId: string | null;
  /** Age of the worker's last PostgreSQL heartbeat (undefined: the worker is not registered). */
  workerHeartbeatAgeMs: number | undefined;
}

export class WorkerStore {
  constructor(readonly db: Db) {}

  /**
   * Runs `fn` only if this process wins the reaper's leadership for the duration of a transaction
   * (a transaction-scoped advisory lock: released at commit, or when the process dies).
   */
  async asReaper<T>(maxIdleMs: number, fn: (q: Queryable) => Promise<T>): Promise<T | undefined> {
    return this.db.transaction(async (tx) => {
      const res = await tx.query<{ leader: boolean }>(queries.try_reaper_lock, [
        `oculus:reaper:${this.db.schema}`,
        String(maxIdleMs),
      ]);
      return res.rows[0]?.leader ? fn(tx) : undefined;
    });
  }

  async register(info: WorkerInfo): Promise<void> {
    await this.db.query(queries.register_worker, [
      info.id,
      info.hostname,
      info.pid,
      info.capacity,
      JSON.stringify(info.labels),
      info.version,
    ]);
  }

  /** Records a heartbeat, extends the worker's leases; returns the builds it still holds. */
  /**
   * Records a heartbeat and extends the leases of the builds the worker is running; returns those it
   * still holds.
   */
  async heartbeat(workerId: string, leaseMs: number, running: HeldBuild[]): Promise<HeldStatus[]> {
    const res = await this.db.query<{ id: string; lease: number; status: string }>(queries.heartbeat_worker, [
      workerId,
      leaseMs,
      JSON.stringify(running),
    ]);
    return res.rows.map((r) => ({
      id: r.id,
      lease: Number(r.lease),
      stopRequested: r.status === "stopping",
    }));
  }

  async markStopped(workerId: string): Promise<void> {
    await this.db.query(queries.worker_stopped, [workerId]);
  }

  async list(): Promise<WorkerRecord[]> {
    const res = await this.db.query<WorkerRow>(queries.list_workers);
    return res.rows.map((r) => ({
      id: r.id,
      hostname: r.hostname,
      pid: r.pid,
      capacity: r.capacity,
      labels: r.labels,
      version: r.version,
      startedAt: r.started_at,
      lastHeartbeatAt: r.last_heartbeat_at,
      heartbeatAgeMs: Number(r.heartbeat_age_ms),
      stoppedAt: r.stopped_at,
      activeBuilds: Number(r.active_builds),
    }));
  }

  async expiredLeases(limit: number, q: Queryable = this.db): Promise<ExpiredLease[]> {
    type Row = {
      id: string;
      lease: number;
      worker_id: string | null;
      worker_heartbeat_age_ms: number | null;
    };
    const res = await q.query<Row>(queries.expired_leases, [limit]);
    return res.rows.map((r) => ({
      id: r.id,
      lease: Number(r.lease),
      workerId: r.worker_id,
      workerHeartbeatAgeMs:
        r.worker_heartbeat_age_ms === null ? undefined : Number(r.worker_heartbeat_age_ms),
    }));
  }

  async renewLeases(builds: HeldBuild[], leaseMs: number, q: Queryable = this.db): Promise<void> {
    if (builds.length > 0) await q.query(queries.renew_worker_leases, [JSON.stringify(builds), leaseMs]);
  }

  /** Takes back builds whose worker is gone; returns them as recorded (queued, failed or stopped). */
  async reap(builds: HeldBuild[], reason: string, q: Queryable = this.db): Promise<Build[]> {
    if (builds.length === 0) return [];
    const res = await q.query<BuildRow>(queries.reap_builds, [JSON.stringify(builds), reason]);
    return res.rows.map(toBuild);
  }

  /** A worker shutting down hands builds back to the queue (no retry counted). */
  async release(builds: HeldBuild[], workerId: string): Promise<Build[]> {
    if (builds.length === 0) return [];
    const res = await this.db.query<BuildRow>(queries.release_builds, [JSON.stringify(builds), workerId]);
    return res.rows.map(toBuild);
  }
}
