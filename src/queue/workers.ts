/**
 * Worker health: registration, heartbeats (Redis and PostgreSQL), the fleet's status, and the reaper
 * that takes back the builds of dead workers. Leases make it safe: a build belongs to its worker
 * until its lease expires; heartbeats extend it; the reaper requeues a build only when its lease
 * expired AND its worker's Redis heartbeat (when Redis has one) is as old, and the requeue bumps the
 * lease, so a worker that comes back can write nothing more for that build.
 */
import { type Build, checkWorkerInfo } from "../core/build.js";
import type { Logger } from "../core/logger.js";
import type {
  HeldBuild,
  HeldStatus,
  WorkerInfo,
  WorkerRecord,
  WorkerStore,
} from "../postgres/worker-store.js";
import type { RedisIndex } from "../redis/index-client.js";

export type WorkerStatus = "active" | "stale" | "dead" | "stopped";

export interface WorkerView extends WorkerRecord {
  status: WorkerStatus;
  /** Milliseconds since the freshest heartbeat (Redis or PostgreSQL). */
  heartbeatAgeMs: number;
  freeSlots: number;
}

export interface HealthPolicy {
  /** How often workers beat (default 2 s). A worker is active while its last beat is under 2 beats old. */
  heartbeatMs: number;
  /** A worker silent this long is dead, and its builds' leases run this long (default 10 s). */
  deadAfterMs: number;
}

export const DEFAULT_HEALTH: HealthPolicy = { heartbeatMs: 2000, deadAfterMs: 10_000 };

export interface ReapReport {
  /** Builds taken back: requeued (status queued), failed (no retries left) or stopped. */
  reaped: Build[];
  /** Workers whose PostgreSQL heartbeat was late but whose Redis heartbeat was fresh: leases renewed. */
  renewedWorkers: string[];
}

type RedisAccess = <T>(
  op: (index: RedisIndex) => Promise<T>,
) => Promise<{ ok: true; value: T } | { ok: false }>;

const REAP_BATCH = 500;

export class WorkerRegistry {
  constructor(
    private readonly store: WorkerStore,
    private readonly redis: RedisAccess,
    private readonly onRequeued: (builds: Build[]) => Promise<void>,
    private readonly logger: Logger,
    readonly health: HealthPolicy,
    /** Builds whose status changed here (their events go out on the stream). */
    private readonly onChanged: (buildIds: string[]) => void = () => undefined,
    /**
     * After builds were taken back or handed back (committed): their concurrency keys' slots may have
     * freed (BuildQueue admits the next builds of those keys). Never throws.
     */
    private readonly afterTakenBack: (builds: Build[]) => Promise<void> = async () => undefined,
  ) {}

  async register(info: WorkerInfo): Promise<void> {
    checkWorkerInfo(info);
    await this.store.register(info);
    await this.redis((index) => index.workerHeartbeat(info.id));
  }

  /**
   * One heartbeat: to Redis (best effort) and to PostgreSQL, which extends the leases of the builds
   * the worker is running (`running`: id and lease of each; a build it does not name expires). Returns the builds PostgreSQL says the worker holds, or undefined when PostgreSQL could not
   * be reached (the worker then keeps going: its Redis heartbeat still counts for the reaper).
   */
  async heartbeat(workerId: string, running: HeldBuild[]): Promise<HeldStatus[] | undefined> {
    const [, held] = await Promise.all([
      this.redis((index) => index.workerHeartbeat(workerId)),
      this.store.heartbeat(workerId, this.health.deadAfterMs, running).catch((err: Error) => {
        this.logger.warn({ err: err.message, workerId }, "heartbeat to PostgreSQL failed");
        return undefined;
      }),
    ]);
    return held;
  }

  async markStopped(workerId: string): Promise<void> {
    await this.store.markStopped(workerId);
  }

  /** Hands builds back to the queue (a worker shutting down); returns those that were still its own. */
  async release(workerId: string, builds: HeldBuild[]): Promise<Build[]> {
    const released = await this.store.release(builds, workerId);
    if (released.length > 0) await this.onRequeued(released);
    this.onChanged(released.map((b) => b.id));
    if (released.length > 0) await this.afterTakenBack(released);
    return released;
  }

  /** The fleet: every registered worker with its status (from the freshest heartbeat) and load. */
  async list(): Promise<WorkerView[]> {
    const records = await this.store.list();
    const ages = await this.redis((index) => index.workerAges(records.map((r) => r.id)));
    return records.map((record) => {
      const redisAge = ages.ok ? ages.value.get(record.id) : undefined;
      const heartbeatAgeMs = Math.max(
        0,
        Math.min(record.heartbeatAgeMs, redisAge ?? Number.POSITIVE_INFINITY),
      );
      return {
        ...record,
        heartbeatAgeMs,
        status: this.statusOf(record, heartbeatAgeMs),
        freeSlots: Math.max(0, record.capacity - record.activeBuilds),
      };
    });
  }

  private statusOf(record: WorkerRecord, ageMs: number): WorkerStatus {
    if (record.stoppedAt) return "stopped";
    if (ageMs < 2 * this.health.heartbeatMs) return "active";
    return ageMs < this.health.deadAfterMs ? "stale" : "dead";
  }

  /**
   * One reaper pass, if this process is the leader for it (a PostgreSQL advisory lock held for the
   * pass; undefined when another process holds it). Expired leases of workers whose Redis heartbeat
   * is fresh are renewed; the others are reaped.
   */
  async reapOnce(): Promise<ReapReport | undefined> {
    const report = await this.store.asReaper(this.health.deadAfterMs, async (tx) => {
      const expired = await this.store.expiredLeases(REAP_BATCH, tx);
      if (expired.length === 0) return { reaped: [], renewedWorkers: [] };
      // A worker whose PostgreSQL heartbeats stopped arriving while its Redis heartbeat is fresh is
      // alive but cut off from PostgreSQL: its builds keep their leases. A worker whose PostgreSQL
      // heartbeats arrive did not renew this lease itself: it no longer runs the build (a restart
      // under the same id, a claim whose answer was lost), so the build is taken back.
      const cutOff = expired.flatMap((e) =>
        e.workerId && (e.workerHeartbeatAgeMs ?? 0) >= 2 * this.health.heartbeatMs ? [e.workerId] : [],
      );
      const ages = await this.redis((index) => index.workerAges([...new Set(cutOff)]));
      const alive = new Set(
        ages.ok
          ? [...ages.value]
              .filter(([, age]) => age !== undefined && age < this.health.deadAfterMs)
              .map(([id]) => id)
          : [],
      );
      const kept = expired.filter((e) => e.workerId !== null && alive.has(e.workerId));
      await this.store.renewLeases(kept, this.health.deadAfterMs, tx);
      const lost = expired.filter((e) => !kept.includes(e));
      const reason = `worker lost: no heartbeat for ${this.health.deadAfterMs} ms`;
      return { reaped: await this.store.reap(lost, reason, tx), renewedWorkers: [...alive] };
    });
    if (!report) return undefined;
    for (const build of report.reaped) {
      this.logger.warn(
        { buildId: build.id, status: build.status, retryCount: build.retryCount, reason: build.lastError },
        "reaper took back a build",
      );
    }
    const requeued = report.reaped.filter((b) => b.status === "queued");
    if (requeued.length > 0) await this.onRequeued(requeued);
    if (report.reaped.length > 0) this.onChanged(report.reaped.map((b) => b.id));
    if (report.reaped.length > 0) await this.afterTakenBack(report.reaped);
    return report;
  }
}
