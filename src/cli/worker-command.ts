/**
 * `oculus worker`: claims builds and runs them. Start-up order: the flag checks; the metrics port
 * (when asked for: a port in use stops the worker before it waits or claims anything), which answers
 * /health 503 `starting` until the queue is open; the queue, waiting for PostgreSQL for as long as it
 * is unreachable (open-with-retry.ts); then the worker's own metrics endpoint on the same port, and
 * the worker. A signal at any point shuts down what has started and exits 0.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Config } from "../core/config.js";
import { OculusError } from "../core/errors.js";
import { createLogger } from "../core/logger.js";
import type { BuildQueue } from "../queue/build-queue.js";
import { OpenAborted, openQueueWaiting } from "../queue/open-with-retry.js";
import { passedEnvFromFlags } from "../worker/build-env.js";
import { commandHandler } from "../worker/command-handler.js";
import { demoBuild } from "../worker/demo-build.js";
import { serveWorkerMetrics, type WorkerMetricsServer } from "../worker/metrics-server.js";
import { Worker } from "../worker/worker.js";
import { logMaxBytesFromEnv, parseLabels } from "./flags.js";
import { announce, drainDescription, stopOnSignal } from "./up.js";

export interface WorkerFlags {
  command?: string;
  capacity: number;
  /** `--prefetch` / OCULUS_PREFETCH: builds claimed ahead of free slots, or "auto" (WorkerOptions.prefetch). */
  prefetch: number | "auto";
  id?: string;
  label?: string[];
  /** `--env NAME`: process variables builds get besides the allowlist (build-env.ts). */
  env?: string[];
  graceMs: number;
  /** `--build-timeout`: default limit of a build's run, seconds. */
  buildTimeout?: number;
  drainMs: number;
  heartbeatMs: number;
  deadAfterMs: number;
  metricsPort?: number;
  metricsHost: string;
}

export async function runWorker(c: Config, opts: WorkerFlags): Promise<void> {
  if (opts.deadAfterMs <= 2 * opts.heartbeatMs) {
    throw new OculusError("config_invalid", 2, "--dead-after-ms must be more than twice --heartbeat-ms");
  }
  const labels = parseLabels(opts.label ?? []);
  const logMaxBytes = logMaxBytesFromEnv();
  const passEnv = passedEnvFromFlags(opts.env, process.env, (m) => console.error(`warning: ${m}`));
  const logger = createLogger();
  const health = { heartbeatMs: opts.heartbeatMs, deadAfterMs: opts.deadAfterMs };
  const metricsHost = opts.metricsHost;
  const starting =
    opts.metricsPort === undefined
      ? undefined
      : await serveStarting(metricsHost, opts.metricsPort).catch((err: NodeJS.ErrnoException) => {
          throw metricsListenError(err, metricsHost, opts.metricsPort ?? 0);
        });

  if (starting) {
    console.log(
      `metrics port http://${hostPart(metricsHost)}:${starting.port}: /health answers 503 until the queue is open`,
    );
  }
  const waiting = new AbortController();
  let queue: BuildQueue | undefined;
  let worker: Worker | undefined;
  let metrics: WorkerMetricsServer | undefined;
  stopOnSignal(
    async () => {
      waiting.abort();
      await starting?.close();
      await worker?.stop();
      await metrics?.close();
      await queue?.close();
    },
    () => drainDescription(worker?.activeBuilds ?? 0, opts.drainMs),
  );
  try {
    queue = await openQueueWaiting(
      { ...c, logger, health, logMaxBytes },
      { signal: waiting.signal, report: console.log },
    );
  } catch (err) {
    if (err instanceof OpenAborted) return; // the signal handler shuts down and exits
    await starting?.close();
    throw err;
  }
  queue.startReaper();
  const handler = announce(
    opts.command ? commandHandler(opts.command, { graceMs: opts.graceMs, passEnv }) : demoBuild,
  );
  worker = new Worker(queue, {
    handler,
    logger,
    capacity: opts.capacity,
    prefetch: opts.prefetch,
    drainMs: opts.drainMs,
    // A stopped build command takes up to its grace period, then SIGKILL, to end.
    abortWaitMs: opts.graceMs + 5000,
    labels,
    buildTimeoutSeconds: opts.buildTimeout,
    ...(opts.id ? { id: opts.id } : {}),
  });
  if (starting) {
    // The same port, now served by the worker's own endpoint (a few milliseconds without a listener).
    await starting.close();
    const open = queue;
    metrics = await serveWorkerMetrics(worker, open, { host: metricsHost, port: starting.port }).catch(
      async (err: NodeJS.ErrnoException) => {
        await open.close();
        throw metricsListenError(err, metricsHost, starting.port);
      },
    );
  }
  await worker.start();
  const prefetching = opts.prefetch === 0 ? "" : `, prefetch ${opts.prefetch}`;
  console.log(`worker ${worker.id} running (capacity ${opts.capacity}${prefetching}, mode ${queue.mode})`);
  if (metrics) console.log(`metrics on ${metrics.url}/metrics (health ${metrics.url}/health)`);
}

interface StartingEndpoint {
  port: number;
  close(): Promise<void>;
}

/**
 * The metrics port while the queue is not open: /health 503 `{"status":"starting"}` (an orchestrator's
 * probe sees the worker alive but not ready), /metrics 503.
 */
async function serveStarting(host: string, port: number): Promise<StartingEndpoint> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const body =
      path === "/health"
        ? { status: "starting", message: "waiting for PostgreSQL: the queue is not open yet" }
        : {
            error: {
              code: "store_unavailable",
              message: "waiting for PostgreSQL: the queue is not open yet",
            },
          };
    res.writeHead(503, { "content-type": "application/json", "retry-after": "1" });
    res.end(JSON.stringify(body));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      if (!server.listening) return;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function hostPart(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/** The metrics endpoint could not listen: say which flag to change (exit 2). */
function metricsListenError(err: NodeJS.ErrnoException, host: string, port: number): Error {
  const why =
    err.code === "EADDRINUSE"
      ? `${host}:${port} is in use: pick another --metrics-port (or OCULUS_WORKER_METRICS_PORT), or 0`
      : err.code === "EADDRNOTAVAIL" || err.code === "ENOTFOUND"
        ? `--metrics-host / OCULUS_WORKER_METRICS_HOST: ${host} is not an address of this machine`
        : `cannot serve metrics on ${host}:${port}: ${err.message}`;
  return new OculusError("config_invalid", 2, why);
}
