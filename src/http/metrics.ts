/**
 * Prometheus metrics for GET /metrics. Gauges are read from the stores at scrape time (so several
 * API processes on one database report the same numbers); the claim and dispatch histograms are
 * fed by this process's queue ("claimed" events), so they cover the claims made here: the local
 * workers of `oculus up`. Each server gets its own registry (tests run several in one process).
 *
 * The store reads behind the gauges (the builds by status count the whole table: 0.7 s at a million
 * builds) are shared: concurrent scrapes wait for the one read in progress, and a result is reused
 * for `cacheMs` (default 5 s), so any number of scrapes costs at most one count per interval.
 */
import { collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { Build } from "../core/build.js";
import { BUILD_STATUSES } from "../core/build.js";
import type { Logger } from "../core/logger.js";
import { EVENT_LOOP_SAMPLE_MS } from "../core/process-metrics.js";
import type { BuildQueue } from "../queue/build-queue.js";
import type { PersistenceProvider } from "./persistence.js";
import { statusLevel } from "./persistence.js";

export interface ApiMetrics {
  registry: Registry;
  /** Stops listening to the queue. */
  close(): void;
}

/** What the queue emits after each claim that returned builds (build-queue.ts). */
export interface ClaimedEvent {
  durationMs: number;
  builds: Build[];
}

const WORKER_STATUSES = ["active", "stale", "dead", "stopped"] as const;
const MODES = ["redis", "postgres"] as const;

/** How long a store read behind /metrics is reused (OCULUS_METRICS_CACHE_MS). */
export const DEFAULT_METRICS_CACHE_MS = 5000;

/**
 * A read shared by its callers: one in progress at a time (single-flight), its result reused for
 * `ttlMs` after it resolves (0: only while in progress). A failed read is not kept.
 */
export function sharedRead<T>(read: () => Promise<T>, ttlMs: number, now: () => number = Date.now) {
  let inFlight: Promise<T> | undefined;
  let kept: { value: T; until: number } | undefined;
  return (): Promise<T> => {
    if (kept && now() < kept.until) return Promise.resolve(kept.value);
    inFlight ??= read().then(
      (value) => {
        inFlight = undefined;
        if (ttlMs > 0) kept = { value, until: now() + ttlMs };
        return value;
      },
      (err: unknown) => {
        inFlight = undefined;
        throw err;
      },
    );
    return inFlight;
  };
}

export function createMetrics(
  queue: BuildQueue,
  persistence: PersistenceProvider | undefined,
  logger: Logger,
  cacheMs: number = DEFAULT_METRICS_CACHE_MS,
): ApiMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  // A failed read leaves the gauge empty for this scrape rather than failing the whole scrape.
  const guarded = (name: string, read: () => Promise<void>) => async () => {
    try {
      await read();
    } catch (err) {
      logger.warn({ err: (err as Error).message, metric: name }, "metric not available");
    }
  };

  // Both queue gauges come from one read (prom-client collects metrics concurrently).
  const readCounts = sharedRead(() => queue.counts(), cacheMs);
  const readStatusCounts = sharedRead(() => queue.statusCounts(), cacheMs);
  const readWorkers = sharedRead(() => queue.workers.list(), cacheMs);
  const readPools = sharedRead(async () => queue.pools(await readWorkers()), cacheMs);
  const ready = new Gauge({
    name: "oculus_queue_length",
    help: "Queued builds ready to dispatch",
    registers: [registry],
    collect: guarded("oculus_queue_length", async () => {
      ready.set((await readCounts()).ready);
    }),
  });
  const delayed = new Gauge({
    name: "oculus_queue_delayed",
    help: "Queued builds waiting out a retry backoff",
    registers: [registry],
    collect: guarded("oculus_queue_delayed", async () => {
      delayed.set((await readCounts()).delayed);
    }),
  });

  const builds = new Gauge({
    name: "oculus_builds",
    help: "Builds by status (a count over the builds table, reused for a few seconds)",
    labelNames: ["status"],
    registers: [registry],
    collect: guarded("oculus_builds", async () => {
      const counts = await readStatusCounts();
      for (const status of BUILD_STATUSES) builds.set({ status }, counts[status] ?? 0);
    }),
  });

  const workers = new Gauge({
    name: "oculus_workers",
    help: "Registered workers by status",
    labelNames: ["status"],
    registers: [registry],
    collect: guarded("oculus_workers", async () => {
      const fleet = await readWorkers();
      for (const status of WORKER_STATUSES) {
        workers.set({ status }, fleet.filter((w) => w.status === status).length);
      }
    }),
  });

  const unrunnable = new Gauge({
    name: "oculus_unrunnable_builds",
    help: "Queued builds that no live worker can run (no active worker's labels include their requires)",
    registers: [registry],
    collect: guarded("oculus_unrunnable_builds", async () => {
      const pools = await readPools();
      unrunnable.set(pools.filter((p) => p.unrunnable).reduce((n, p) => n + p.queued, 0));
    }),
  });

  const readWaitingOnLimit = sharedRead(() => queue.countWaitingOnLimit(), cacheMs);
  const waitingOnLimit = new Gauge({
    name: "oculus_builds_waiting_on_concurrency_limit",
    help: "Queued builds waiting for a slot of their concurrency key (not in oculus_queue_length)",
    registers: [registry],
    collect: guarded("oculus_builds_waiting_on_concurrency_limit", async () => {
      waitingOnLimit.set(await readWaitingOnLimit());
    }),
  });

  const mode = new Gauge({
    name: "oculus_queue_mode",
    help: "1 for the mode the queue runs in: redis (fast path) or postgres (fallback)",
    labelNames: ["mode"],
    registers: [registry],
    collect() {
      for (const m of MODES) mode.set({ mode: m }, queue.mode === m ? 1 : 0);
    },
  });

  registerPersistenceGauges(registry, persistence);

  const claimDuration = new Histogram({
    name: "oculus_claim_duration_seconds",
    help: "Duration of claim calls that returned builds, in this process",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const dispatchLatency = new Histogram({
    name: "oculus_dispatch_latency_seconds",
    help: "From when a build became claimable (submit, or the end of its retry backoff) to its claim",
    buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600],
    registers: [registry],
  });
  const onClaimed = (event: ClaimedEvent) => {
    claimDuration.observe(event.durationMs / 1000);
    const now = Date.now();
    for (const build of event.builds) {
      // createdAt and runAt are PostgreSQL's clock, now is ours: clamp a small skew at zero.
      const since = Math.max(build.createdAt.getTime(), build.runAt.getTime());
      dispatchLatency.observe(Math.max(0, now - since) / 1000);
    }
  };
  queue.on("claimed", onClaimed);

  return { registry, close: () => queue.off("claimed", onClaimed) };
}

/** Gauges for the Redis persistence checks, when a provider gives a report: 0 pass, 1 warn, 2 fail. */
function registerPersistenceGauges(registry: Registry, persistence: PersistenceProvider | undefined): void {
  if (!persistence) return;
  // Each gauge reads the provider itself: prom-client collects metrics concurrently.
  const overall = new Gauge({
    name: "oculus_redis_persistence_status",
    help: "Redis persistence checks overall: 0 pass, 1 warn, 2 fail",
    registers: [registry],
    collect() {
      overall.reset();
      const report = persistence();
      if (report) overall.set(statusLevel(report.status));
    },
  });
  const check = new Gauge({
    name: "oculus_redis_persistence_check",
    help: "Each Redis persistence check: 0 pass, 1 warn, 2 fail",
    labelNames: ["check"],
    registers: [registry],
    collect() {
      check.reset();
      for (const c of persistence()?.checks ?? []) check.set({ check: c.name }, statusLevel(c.status));
    },
  });
}
