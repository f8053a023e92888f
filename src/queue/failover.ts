/**
 * Failover between the Redis fast path and PostgreSQL. Tracks Redis as absent (not configured), down,
 * recovering (back; the reconciler is making the index equal to PostgreSQL) or up, and runs every
 * Redis operation through `tryRedis`: a fault switches to PostgreSQL at once (the caller then does
 * the operation there), and the fast path resumes only after a reconcile.
 */

import { ValidationError } from "../core/errors.js";
import type { Logger } from "../core/logger.js";
import type { BuildStore } from "../postgres/store.js";
import type { RedisIndex } from "../redis/index-client.js";
import { type ReconcileReport, reconcileIndex } from "./reconciler.js";

export type QueueMode = "redis" | "postgres";
type RedisState = "absent" | "down" | "recovering" | "up";

/** What the failover tells its owner (the BuildQueue turns them into events). */
export interface FailoverEvents {
  modeChanged(mode: QueueMode, cause?: Error): void;
  reconciled(report: ReconcileReport): void;
}

const REDIS_PROBE_INTERVAL_MS = 500;

export class RedisFailover {
  private state: RedisState;
  private recovery: Promise<void> | undefined;
  private reconciling: Promise<ReconcileReport> | undefined;
  private driftSeen = false;
  private timers: NodeJS.Timeout[] = [];
  private closed = false;

  constructor(
    private readonly store: BuildStore,
    readonly index: RedisIndex | undefined,
    private readonly logger: Logger,
    private readonly reconcileIntervalMs: number,
    private readonly events: FailoverEvents,
  ) {
    this.state = index ? "down" : "absent";
  }

  /** "redis": the Redis index dispatches. "postgres": PostgreSQL does everything. */
  get mode(): QueueMode {
    return this.state === "up" ? "redis" : "postgres";
  }

  /**
   * Connects, and returns once the first recovery (a reconcile) is done. A Redis that is down at
   * start is not an error: the queue serves from PostgreSQL, and the "ready" event (ioredis keeps
   * reconnecting) starts the recovery.
   */
  async start(): Promise<void> {
    if (!this.index) {
      this.logger.info({ mode: this.mode }, "no Redis configured: PostgreSQL path only");
      return;
    }
    const redis = this.index.redis;
    redis.on("error", (err: Error) => this.logger.debug({ err: err.message }, "redis connection error"));
    redis.on("close", () => this.redisDown(new Error("connection closed")));
    redis.on("ready", () => this.startRecovery());
    await redis
      .connect()
      .catch((err: Error) => this.logger.warn({ err: err.message }, "Redis unreachable at start"));
    await this.recovery;
    this.timers.push(setInterval(() => void this.checkIndex(), this.reconcileIntervalMs).unref());
    this.timers.push(setInterval(() => this.probeRedis(), REDIS_PROBE_INTERVAL_MS).unref());
  }

  /**
   * Runs `op` on Redis when the fast path may be used (`duringRecovery`: also while the reconciler is
   * catching up, for writes that must reach the index). A Redis fault switches to PostgreSQL mode.
   */
  async tryRedis<T>(
    op: (index: RedisIndex) => Promise<T>,
    duringRecovery = false,
  ): Promise<{ ok: true; value: T } | { ok: false }> {
    const usable = this.state === "up" || (duringRecovery && this.state === "recovering");
    if (!this.index || !usable) return { ok: false };
    try {
      return { ok: true, value: await op(this.index) };
    } catch (err) {
      this.redisDown(err as Error);
      return { ok: false };
    }
  }

  private redisDown(err: Error): void {
    if (this.closed || !this.index || this.state === "down") return;
    const was = this.mode;
    this.state = "down";
    this.logger.warn({ err: err.message, mode: "postgres" }, "Redis unavailable: serving from PostgreSQL");
    if (was !== "postgres") this.events.modeChanged("postgres", err);
  }

  private probeRedis(): void {
    if (this.state === "down" && this.index?.redis.status === "ready") this.startRecovery();
  }

  /** Redis answered again: rebuild the index from PostgreSQL, then resume the fast path. */
  private startRecovery(): void {
    if (this.closed || !this.index || this.recovery || this.state === "up") return;
    this.recovery = (async () => {
      try {
        this.state = "recovering";
        const report = await this.reconcile();
        if (this.state !== "recovering") return;
        this.state = "up";
        this.logger.info(
          { mode: "redis", ...report },
          "Redis available: index reconciled, fast path resumed",
        );
        this.events.modeChanged("redis");
      } catch (err) {
        this.redisDown(err as Error);
      } finally {
        this.recovery = undefined;
      }
    })();
  }

  /**
   * Makes the Redis index equal to the queued builds in PostgreSQL (see reconciler.ts). Runs at start,
   * on recovery, periodically when drift is seen, and on demand (`oculus reconcile`). Concurrent calls
   * share one run.
   */
  async reconcile(): Promise<ReconcileReport> {
    const index = this.index;
    if (!index) {
      throw new ValidationError("redis", "no Redis is configured (set REDIS_URL); nothing to reconcile");
    }
    this.reconciling ??= reconcileIndex(this.store, index)
      .then((report) => {
        if (report.lostData && report.queued > 0) {
          this.logger.warn(
            report,
            "Redis had lost its data (index marker missing): index rebuilt from PostgreSQL",
          );
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
   * Periodic drift check: a missing marker (Redis lost its data) triggers a rebuild at once; a count
   * that differs from PostgreSQL on two checks in a row (a real difference, not a submit in flight)
   * triggers a reconcile.
   */
  private async checkIndex(): Promise<void> {
    if (this.state !== "up" || !this.index) return;
    try {
      const lost = !(await this.index.hasMarker());
      const { ready, delayed } = await this.index.length();
      const queued = await this.store.countQueued();
      const drift = ready + delayed !== queued;
      if (lost || (drift && this.driftSeen)) await this.reconcile();
      this.driftSeen = drift && !lost && !this.driftSeen;
    } catch (err) {
      this.logger.debug({ err: (err as Error).message }, "index check failed");
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    await this.recovery?.catch(() => undefined);
    this.index?.redis.disconnect();
  }
}
