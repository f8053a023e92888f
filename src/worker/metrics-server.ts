/**
 * A worker's own Prometheus endpoint (`oculus worker --metrics-port`): what only the worker knows —
 * its builds running and how their runs ended, how long its claims take, how fresh its heartbeat is
 * — for a fleet spread over many machines. The queue-wide figures (queue length, builds by status)
 * come from the API's /metrics. Plain node:http: two routes, no framework.
 *
 *   GET /metrics  Prometheus text format
 *   GET /health   200 {"status":"ok", ...} while the heartbeat is fresh; 503 {"status":"stale"} once it
 *                 is older than the dead-worker timeout (the queue will requeue this worker's builds)
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { EVENT_LOOP_SAMPLE_MS } from "../core/process-metrics.js";
import { applyServerLimits, nodeServerOptions, type TransportLimits } from "../http/transport.js";
import type { BuildQueue } from "../queue/build-queue.js";
import type { BuildEndedEvent, RunOutcome, Worker } from "./worker.js";

const OUTCOMES: RunOutcome[] = ["completed", "failed", "stopped", "abandoned"];

/** The worker's metrics, fed by its events and read from it at scrape time. */
export function createWorkerMetrics(
  worker: Worker,
  queue: BuildQueue,
): { registry: Registry; close(): void } {
  const registry = new Registry();
  registry.setDefaultLabels({ worker: worker.id });
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  new Gauge({
    name: "oculus_worker_capacity",
    help: "Builds this worker runs at once at most",
    registers: [registry],
    collect() {
      this.set(worker.slots);
    },
  });
  new Gauge({
    name: "oculus_worker_builds_running",
    help: "Builds this worker runs now",
    registers: [registry],
    collect() {
      this.set(worker.activeBuilds);
    },
  });
  new Gauge({
    name: "oculus_worker_heartbeat_age_seconds",
    help: "Since PostgreSQL last answered this worker's heartbeat (-1: not yet)",
    registers: [registry],
    collect() {
      const age = worker.heartbeatAgeMs();
      this.set(age === undefined ? -1 : age / 1000);
    },
  });
  new Gauge({
    name: "oculus_worker_queue_mode",
    help: "1 for the mode this worker's queue is in (redis: fast path; postgres: fallback)",
    labelNames: ["mode"],
    registers: [registry],
    collect() {
      for (const mode of ["redis", "postgres"]) this.set({ mode }, queue.mode === mode ? 1 : 0);
    },
  });
  const ended = new Counter({
    name: "oculus_worker_builds_ended_total",
    help: "Build runs ended on this worker, by outcome (abandoned: taken from it, or handed back at shutdown)",
    labelNames: ["outcome"],
    registers: [registry],
  });
  const durations = new Histogram({
    name: "oculus_worker_build_duration_seconds",
    help: "Build run time on this worker, by outcome",
    labelNames: ["outcome"],
    buckets: [1, 10, 60, 300, 900, 1800, 3600, 7200, 14400],
    registers: [registry],
  });
  const claims = new Histogram({
    name: "oculus_worker_claim_duration_seconds",
    help: "Time of this worker's claims that returned builds",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });
  for (const outcome of OUTCOMES) ended.inc({ outcome }, 0);
  const onEnded = (e: BuildEndedEvent) => {
    ended.inc({ outcome: e.outcome });
    durations.observe({ outcome: e.outcome }, e.durationMs / 1000);
  };
  const onClaimed = (e: { durationMs: number }) => claims.observe(e.durationMs / 1000);
  worker.on("build-ended", onEnded);
  queue.on("claimed", onClaimed);
  return {
    registry,
    close() {
      worker.off("build-ended", onEnded);
      queue.off("claimed", onClaimed);
    },
  };
}

export interface WorkerMetricsServer {
  url: string;
  close(): Promise<void>;
}

/**
 * The endpoint's transport limits: a scraper sends a small GET every few seconds, so a client that
 * connects and sends slowly or nothing, or opens connections by the hundred, is cut off early. Not
 * configurable: nothing a scraper does comes near them.
 */
export const WORKER_METRICS_LIMITS: TransportLimits = {
  requestTimeoutMs: 10_000,
  headersTimeoutMs: 10_000,
  keepAliveTimeoutMs: 72_000, // above a load balancer's or a scraper's idle timeout (transport.ts)
  connectionTimeoutMs: 0,
  maxRequestsPerSocket: 0,
  maxConnections: 64,
};

/** Serves the worker's /metrics and /health on host:port (port 0: any free port). */
export async function serveWorkerMetrics(
  worker: Worker,
  queue: BuildQueue,
  options: { host: string; port: number; limits?: TransportLimits },
): Promise<WorkerMetricsServer> {
  const metrics = createWorkerMetrics(worker, queue);
  const limits = options.limits ?? WORKER_METRICS_LIMITS;
  const server: Server = createServer(nodeServerOptions(limits), (req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET") {
      res.writeHead(405, { allow: "GET", "content-type": "application/json" });
      res.end(JSON.stringify({ error: { code: "method_not_allowed", message: "only GET" } }));
    } else if (path === "/metrics") {
      metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { "content-type": metrics.registry.contentType });
          res.end(text);
        },
        () => {
          res.writeHead(500, { "content-type": "text/plain" });
          res.end("metrics unavailable\n");
        },
      );
    } else if (path === "/health") {
      const age = worker.heartbeatAgeMs();
      const stale = age !== undefined && age > queue.workers.health.deadAfterMs;
      res.writeHead(stale ? 503 : 200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          status: stale ? "stale" : "ok",
          workerId: worker.id,
          mode: queue.mode,
          running: worker.activeBuilds,
          capacity: worker.slots,
          heartbeatAgeMs: age ?? null,
        }),
      );
    } else {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { code: "not_found", message: "GET /metrics or /health" } }));
    }
  });
  applyServerLimits(server, limits);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const host = options.host.includes(":") ? `[${options.host}]` : options.host;
  return {
    url: `http://${host}:${port}`,
    async close() {
      metrics.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
