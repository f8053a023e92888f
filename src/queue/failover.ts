/**
 * Failover between the Redis fast path and PostgreSQL. Tracks Redis as absent (not configured), down,
 * recovering (proven to take writes again; the reconciler is making the index equal to PostgreSQL)
 * or up, and runs every Redis operation through `tryRedis`: any fault (a lost connection, a timeout,
 * or an error reply: OOM under noeviction, READONLY on a replica, MISCONF, a script error) switches
 * this process to PostgreSQL at once (the caller then does the operation there).
 *
 * While Redis is down no request touches it. Returning is decided off the request path, by the
 * failover's own timer: a probe (PING, then a SET of the probe key, with a short timeout) that proves
 * Redis answers and takes writes starts the recovery, and only a certified reconcile resumes the fast
 * path. Failed probes back off (500 ms doubling to 5 s; a reconnection or a success resets it), and
 * repeated failures of one kind are logged once per 30 s with a count (src/core/log-throttle.ts).
 */

import { ValidationError } from "../core/errors.js";
import { Backoff, LogThrottle } from "../core/log-throttle.js";
import type { Logger } from "../core/logger.js";
import type { ReconcileStore } from "../postgres/reconcile-store.js";
import type { BuildStore } from "../postgres/store.js";
import { isRedisFailoverError } from "../redis/connection.js";
import { type RedisIndex, RedisIndexFault, withTimeout } from "../redis/index-client.js";
import { CLAIM_PROTECTION_MS, type ReconcileReport, reconcileIndex } from "./reconciler.js";

export type QueueMode = "redis" | "postgres";
type RedisState = "absent" | "down" | "recovering" | "up";

/** What the failover tells its owner (the BuildQueue turns them into events). */
export interface FailoverEvents {
  modeChanged(mode: QueueMode, cause?: Error): void;
  reconciled(report: ReconcileReport): void;
}

/** A probe that takes longer than this counts as failed: Redis is hung (DEBUG SLEEP, a long KEYS). */
const PROBE_TIMEOUT_MS = 500;
const PROBE_BACKOFF_INITIAL_MS = 500;
/** The longest any operation through tryRedis may take (a little over ioredis's command timeout). */
const REDIS_OPERATION_TIMEOUT_MS = 2500;
/** A Redis fixed while probes back off is back within this (a plain server turned master again). */
const PROBE_BACKOFF_MAX_MS = 5000;

/** How often the drift check found a difference (exposed for tests and load measurements). */
export interface DriftStats {
  checks: number;
  drifts: number;
  reconciles: number;
}

export class RedisFailover {
  private state: RedisState;
  private probing: Promise<void> | undefined;
  /** A probe was asked for (a reconnection, a fault during a recovery) while one was in flight. */
  private probeAgain = false;
  private probeTimer: NodeJS.Timeout | undefined;
  private reconciling: Promise<ReconcileReport | undefined> | undefined;
  private driftSeen = false;
  private driftTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Counts connections made ready: a reconcile walk that spans a reconnection certifies nothing. */
  private connectionEpoch = 0;
  private readonly backoff = new Backoff(PROBE_BACKOFF_INITIAL_MS, PROBE_BACKOFF_MAX_MS);
  private readonly faults: LogThrottle;
  readonly driftStats: DriftStats = { checks: 0, drifts: 0, reconciles: 0 };

  constructor(
    private readonly store: BuildStore,
    private readonly reconcileStore: ReconcileStore,
    readonly index: RedisIndex | undefined,
    private readonly logger: Logger,
    private readonly reconcileIntervalMs: number,
    private readonly events: FailoverEvents,
  ) {
    this.state = index ? "down" : "absent";
    this.faults = new LogThrottle(logger);
  }

  /** "redis": the Redis index dispatches. "postgres": PostgreSQL does everything. */
  get mode(): QueueMode {
    return this.state === "up" ? "redis" : "postgres";
  }

  /**
   * Connects, and returns once the first probe (and, if Redis takes writes, the first recovery) is
   * done. A Redis that is down or refusing writes at start is not an error: the queue serves from
   * PostgreSQL, and the probe timer (or the "ready" event, as ioredis keeps reconnecting) starts
   * the recovery later.
   */
  async start(): Promise<void> {
    if (!this.index) {
      this.logger.info({ mode: this.mode }, "no Redis configured: PostgreSQL path only");
      return;
    }
    const redis = this.index.redis;
    redis.on("error", (err: Error) => this.logger.debug({ err: err.message }, "redis connection error"));
    redis.on("close", () => this.redisDown(new Error("connection closed")));
    redis.on("ready", () => {
      this.connectionEpoch += 1;
      // A fresh connection: try at once, whatever the backoff had grown to.
      this.backoff.reset();
      this.probeSoon(0);
    });
    await redis
      .connect()
      .catch((err: Error) => this.logger.warn({ err: err.message }, "Redis unreachable at start"));
    await this.probeAndRecover();
    this.driftTimer = setInterval(() => void this.checkIndex(), this.reconcileIntervalMs).unref();
  }

  /**
   * Runs `op` on Redis when the fast path may be used (`duringRecovery`: also while the reconciler is
   * catching up, for writes that must reach the index). A Redis fault (an error reply included)
   * switches to PostgreSQL mode and returns { ok: false }: the caller does the operation there.
   */
  async tryRedis<T>(
    op: (index: RedisIndex) => Promise<T>,
    duringRecovery = false,
  ): Promise<{ ok: true; value: T } | { ok: false }> {
    const usable = this.state === "up" || (duringRecovery && this.state === "recovering");
    if (!this.index || !usable) return { ok: false };
    try {
      // ioredis times commands out itself (2 s); this bound also covers an operation of several
      // commands, or one ioredis never sent, so that no caller waits on Redis past it.
      return {
        ok: true,
        value: await withTimeout(op(this.index), REDIS_OPERATION_TIMEOUT_MS, "Redis operation"),
      };
    } catch (err) {
      this.redisDown(err as Error);
      return { ok: false };
    }
  }

  private redisDown(err: Error): void {
    if (this.closed || !this.index || this.state === "down") return;
    const was = this.mode;
    this.state = "down";
    const cause = err instanceof RedisIndexFault ? err.cause : err;
    this.faults.warn(
      "redis-down",
      // failingOver: a demoted, loading or slot-less node (READONLY, LOADING, CLUSTERDOWN, TRYAGAIN):
      // a Sentinel or Cluster failover in progress; the client reconnects to the new master by itself.
      { err: cause.message, mode: "postgres", failingOver: isRedisFailoverError(cause) },
      "Redis unavailable: serving from PostgreSQL",
    );
    if (was !== "postgres") this.events.modeChanged("postgres", cause);
    this.probeSoon(this.backoff.delayMs);
  }

  /** Schedules a probe in `delayMs` (an earlier one already scheduled is replaced). */
  private probeSoon(delayMs: number): void {
    if (this.closed) return;
    clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => {
      this.probeTimer = undefined;
      void this.probeAndRecover();
    }, delayMs).unref();
  }

  /**
   * The way back to Redis: a probe proves that Redis answers and takes writes within a short timeout;
   * then the recovery reconciles the index and resumes the fast path. Never on a request's path.
   */
  private probeAndRecover(): Promise<void> {
    const index = this.index;
    if (this.closed || !index) return Promise.resolve();
    if (this.probing) {
      // Not a lost request: the run in flight may have started before the reason for this one (a
      // new connection, a fault during its recovery), so it probes again when it ends.
      this.probeAgain = true;
      return this.probing;
    }
    if (this.state !== "down") return Promise.resolve();
    this.probing = (async () => {
      try {
        await index.probeWrites(PROBE_TIMEOUT_MS, String(process.pid));
      } catch (err) {
        this.backoff.failed();
        this.faults.warn(
          "redis-probe",
          { err: (err as Error).message, retryInMs: this.backoff.delayMs },
          "Redis probe failed: still serving from PostgreSQL",
        );
        return;
      }
      await this.recover();
    })().finally(() => {
      this.probing = undefined;
      this.scheduleNextProbe();
    });
    return this.probing;
  }

  /**
   * After a probe run: while Redis is still down, a probe must be scheduled, or the queue would stay
   * on PostgreSQL for good. At once when a probe was asked for during the run, else after the backoff
   * (unless a fault during the run already scheduled one).
   */
  private scheduleNextProbe(): void {
    const again = this.probeAgain;
    this.probeAgain = false;
    if (this.closed || this.state !== "down") return;
    if (again) this.probeSoon(0);
    else if (!this.probeTimer) this.probeSoon(this.backoff.delayMs);
  }

  /** Redis takes writes again: rebuild the index from PostgreSQL, then resume the fast path. */
  private async recover(): Promise<void> {
    if (this.closed || this.state !== "down") return;
    this.state = "recovering";
    try {
      // A drift check's reconcile still in flight may have skipped (another process walked): wait it
      // out, then reconcile for this recovery.
      await this.reconciling?.catch(() => undefined);
      const report = await this.runReconcile("wait");
      if (!report) throw new Error("reconcile returned no report");
      if (this.state !== "recovering") return;
      this.state = "up";
      this.backoff.reset();
      for (const kind of ["redis-down", "redis-probe", "reconcile"]) this.faults.reset(kind);
      this.logger.info({ mode: "redis", ...report }, "Redis available: index reconciled, fast path resumed");
      this.events.modeChanged("redis");
    } catch (err) {
      this.backoff.failed();
      this.redisDown(err as Error);
    }
  }

  /**
   * Makes the Redis index equal to the queued builds in PostgreSQL (see reconciler.ts). Runs at start,
   * on recovery, when the drift check sees a difference, and on demand (`oculus reconcile`). Calls in
   * this process share one run; across processes one walks at a time (the others wait for it here).
   */
  async reconcile(): Promise<ReconcileReport> {
    if (!this.index) {
      throw new ValidationError("redis", "no Redis is configured (set REDIS_URL); nothing to reconcile");
    }
    await this.reconciling?.catch(() => undefined);
    const report = await this.runReconcile("wait");
    if (!report) throw new Error("reconcile returned no report");
    return report;
  }

  private runReconcile(whenBusy: "wait" | "skip"): Promise<ReconcileReport | undefined> {
    const index = this.index;
    if (!index) return Promise.resolve(undefined);
    this.reconciling ??= reconcileIndex(this.store, this.reconcileStore, index, {
      whenBusy,
      connectionEpoch: () => this.connectionEpoch,
    })
      .then((report) => {
        if (!report) return undefined;
        if (report.lostData && report.queued > 0) {
          this.logger.warn(
            report,
            "Redis had lost its data (index marker missing): index rebuilt from PostgreSQL",
          );
        }
        if (report.walks > 1) {
          this.logger.warn(report, "Redis lost data during a reconcile walk: walked again");
        }
        this.events.reconciled(report);
        return report;
      })
      .finally(() => {
        this.reconciling = undefined;
      });
    return this.reconciling;
  }

  /**
   * Periodic drift check: a missing marker (Redis lost its data) triggers a rebuild at once. A
   * difference between the index and PostgreSQL's count on two checks in a row triggers a reconcile,
   * unless another process is walking. Ids popped for a claim that is still committing count as in
   * flight (PostgreSQL may still count them as queued), so claims under load are no difference.
   */
  private async checkIndex(): Promise<void> {
    const index = this.index;
    if (this.state !== "up" || !index || this.reconciling) return;
    let lost: boolean;
    let counts: { ready: number; delayed: number; claiming: number };
    try {
      lost = !(await index.hasMarker());
      counts = await index.counts(CLAIM_PROTECTION_MS);
    } catch (err) {
      this.redisDown(err as Error);
      return;
    }
    let queued: number;
    try {
      queued = await this.store.countQueued();
    } catch (err) {
      this.faults.warn("index-check", { err: (err as Error).message }, "index check failed (PostgreSQL)");
      return;
    }
    const indexed = counts.ready + counts.delayed;
    const drift = indexed > queued || indexed + counts.claiming < queued;
    this.driftStats.checks += 1;
    if (drift) this.driftStats.drifts += 1;
    if (lost || (drift && this.driftSeen)) {
      this.driftStats.reconciles += 1;
      try {
        await this.runReconcile("skip");
        this.faults.reset("reconcile");
      } catch (err) {
        if (err instanceof RedisIndexFault) this.redisDown(err);
        else this.faults.warn("reconcile", { err: (err as Error).message }, "reconcile failed");
      }
    }
    this.driftSeen = drift && !lost && !this.driftSeen;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.driftTimer);
    clearTimeout(this.probeTimer);
    await this.probing?.catch(() => undefined);
    this.index?.redis.disconnect();
  }
}
