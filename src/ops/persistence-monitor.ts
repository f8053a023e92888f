/**
 * Runs the persistence checks periodically (default every 60 s) and keeps the latest report, for the
 * server's `/health`, `/metrics` and start-up (`--require-persistence`). A check that turns warn or
 * fail is logged once, when it changes, not on every run; one that recovers is logged at info.
 *
 *   const monitor = new PersistenceMonitor(() => connectAdminRedis(url), { logger }); // a client that failed is replaced
 *   const first = await monitor.checkNow();   // e.g. refuse to start when first.status === "fail"
 *   monitor.start();
 *   monitor.latest();                          // the last report, or undefined before the first
 *   await monitor.stop();
 *
 * Events: "report" (report) after every run.
 */
import { EventEmitter, once } from "node:events";
import type { Redis } from "ioredis";
import { type Logger, silentLogger } from "../core/logger.js";
import {
  type CheckStatus,
  checkPersistence,
  type PersistenceCheck,
  type PersistenceCheckOptions,
  type PersistenceReport,
} from "./persistence-checks.js";

export interface PersistenceMonitorOptions {
  /** Between two runs. Default 60 000 ms. */
  intervalMs?: number;
  logger?: Logger;
  /** Thresholds of the checks. */
  checks?: PersistenceCheckOptions;
  /** A run that gets no answer in this time reports the connection as failing. Default 10 000 ms. */
  timeoutMs?: number;
}

export const DEFAULT_PERSISTENCE_INTERVAL_MS = 60_000;

export class PersistenceMonitor extends EventEmitter {
  private redis: Redis | undefined;
  /** True when the monitor made the client (from a factory) and so must close it. */
  private readonly ownsClient: boolean;
  private readonly factory: (() => Redis | Promise<Redis>) | undefined;
  private readonly intervalMs: number;
  private readonly logger: Logger;
  private last: PersistenceReport | undefined;
  private running: Promise<PersistenceReport> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  /**
   * `redis`: a client the caller owns, or a factory whose client the monitor owns and closes (it may
   * connect first: on a Cluster it finds the master owning the queue's slot).
   */
  constructor(
    redis: Redis | (() => Redis | Promise<Redis>),
    private readonly options: PersistenceMonitorOptions = {},
  ) {
    super();
    if (typeof redis === "function") {
      this.factory = redis;
      this.ownsClient = true;
    } else {
      this.redis = redis;
      this.ownsClient = false;
    }
    this.intervalMs = options.intervalMs ?? DEFAULT_PERSISTENCE_INTERVAL_MS;
    if (!(this.intervalMs >= 100)) throw new RangeError("intervalMs must be at least 100 ms");
    this.logger = options.logger ?? silentLogger();
  }

  /** Runs the checks at once, then every intervalMs, until stop(). Calling it twice is harmless. */
  start(): void {
    if (this.timer || this.stopped) return;
    void this.checkNow();
    this.timer = setInterval(() => void this.checkNow(), this.intervalMs);
    this.timer.unref();
  }

  /** Stops the runs; closes the client if the monitor made it. Waits for a run in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
    if (this.ownsClient) this.redis?.disconnect();
    this.redis = undefined;
  }

  /** The latest report (undefined before the first run ends). */
  latest(): PersistenceReport | undefined {
    return this.last;
  }

  /**
   * Runs the checks now (sharing a run already in progress). Never rejects: a Redis that cannot be
   * asked gives a report whose one check, "connection", fails.
   */
  checkNow(): Promise<PersistenceReport> {
    this.running ??= this.run().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async run(): Promise<PersistenceReport> {
    let report: PersistenceReport;
    const timeoutMs = this.options.timeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    // A client that queues commands while disconnected would never answer: bound the wait.
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Redis did not answer within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const check = async () => checkPersistence(await this.readyClient(), this.options.checks);
      report = await Promise.race([check(), timeout]);
    } catch (err) {
      report = unreachable(err as Error);
      // A client of our own that failed may hold queued commands: start the next run on a new one.
      if (this.ownsClient) {
        this.redis?.disconnect();
        this.redis = undefined;
      }
    } finally {
      clearTimeout(timer);
    }
    this.logChanges(this.last, report);
    this.last = report;
    this.emit("report", report);
    return report;
  }

  /** The client, connected (a client of our own is made on first use; any client may be connecting). */
  private async readyClient(): Promise<Redis> {
    if (!this.redis) {
      if (!this.factory || this.stopped) throw new Error("the persistence monitor is stopped");
      const made = await this.factory();
      made.on("error", () => undefined);
      if (this.stopped) {
        made.disconnect();
        throw new Error("the persistence monitor is stopped");
      }
      this.redis = made;
    }
    const redis = this.redis;
    if (redis.status === "wait") await redis.connect();
    else if (redis.status !== "ready") await once(redis, "ready");
    return redis;
  }

  /** Logs each check whose status changed since the previous report (the first report: every non-pass). */
  private logChanges(previous: PersistenceReport | undefined, report: PersistenceReport): void {
    const before = new Map<string, CheckStatus>(previous?.checks.map((c) => [c.name, c.status]) ?? []);
    const now = new Set(report.checks.map((c) => c.name));
    for (const [name, was] of before) {
      // A check that is no longer reported (the connection came back) has recovered.
      if (!now.has(name) && was !== "pass") {
        this.logger.info({ check: name, was }, `Redis persistence check ${name} passes again`);
      }
    }
    for (const c of report.checks) {
      const was = before.get(c.name) ?? "pass";
      if (c.status === was) continue;
      if (c.status === "pass") {
        this.logger.info(
          { check: c.name, value: c.value, was },
          `Redis persistence check ${c.name} passes again`,
        );
      } else {
        this.logger.warn(
          { check: c.name, status: c.status, value: c.value, fix: c.fix, was },
          `Redis persistence check ${c.name}: ${c.status}: ${c.message}`,
        );
      }
    }
  }
}

function unreachable(err: Error): PersistenceReport {
  const check: PersistenceCheck = {
    name: "connection",
    status: "fail",
    value: null,
    message: `the persistence checks could not run: ${err.message}`,
    fix: "check that Redis is up and REDIS_URL points at it",
  };
  return { status: "fail", checks: [check], checkedAt: new Date().toISOString() };
}
