/**
 * `oculus up`, the main command (what `npm start` runs): the queue (stores, migrations, reconciler,
 * reaper), the HTTP API, and local workers. Any number of `oculus up` processes may share one
 * PostgreSQL and Redis: the reaper runs one pass at a time fleet-wide (an advisory lock), migrations
 * run under a lock, worker ids are unique per process, and each API serves from the shared record.
 *
 * Start-up order: the configuration checks, then the HTTP port (bound before the store is opened:
 * until the queue is open /health and the store routes answer 503), then the queue, waiting for
 * PostgreSQL for as long as it is unreachable (open-with-retry.ts), then the reaper, the scheduler
 * (recurring schedules), retention and the local workers. A signal at any point shuts down what has started and exits 0.
 */

import type { Config } from "../core/config.js";
import { ConfigError } from "../core/errors.js";
import { createLogger, type Logger } from "../core/logger.js";
import { printable } from "../core/printable.js";
import {
  type AuthConfig,
  AuthState,
  authEnabled,
  checkBind,
  isLoopback,
  loadAuthConfig,
} from "../http/auth.js";
import { type CorsOptions, corsFromEnv } from "../http/cors.js";
import { httpHardeningFromEnv } from "../http/http-settings.js";
import {
  buildServer,
  DEFAULT_RATE_LIMIT,
  listenApi,
  PendingQueue,
  type PersistenceProvider,
  type PersistenceReport,
  type RateLimitOptions,
} from "../http/server.js";
import { streamLimitsFromEnv } from "../http/stream-limits.js";
import { type TrustProxy, trustProxyFromEnv } from "../http/trust-proxy.js";
import { PersistenceMonitor } from "../ops/persistence-monitor.js";
import { connectAdminRedis } from "../ops/redis-admin.js";
import type { BuildQueue } from "../queue/build-queue.js";
import { describeStore, OpenAborted, openQueueWaiting } from "../queue/open-with-retry.js";
import { startRetention } from "../queue/retention.js";
import type { RedisClient } from "../redis/connection.js";
import { connectRedis } from "../redis/index-client.js";
import { redisKeys } from "../redis/keys.js";
import { passedEnvFromFlags } from "../worker/build-env.js";
import { commandHandler } from "../worker/command-handler.js";
import { demoBuild } from "../worker/demo-build.js";
import { Worker, type WorkerHandler } from "../worker/worker.js";
import { daysToMs, logMaxBytesFromEnv, parseLabels } from "./flags.js";

export interface UpOptions {
  host: string;
  port: number;
  /** Local workers; default 1 with --command or --demo, otherwise none. */
  workers?: number;
  command?: string;
  /** `--label k=v` of the local workers. */
  label?: string[];
  /** `--env NAME`: process variables builds get besides the allowlist (build-env.ts). */
  env?: string[];
  /** Local workers run the built-in demo build (unless --command), and two demo builds are submitted. */
  demo?: boolean;
  /** How long each of the demo build's five phases takes (its `params.stepMs`). */
  demoStepMs?: number;
  /** Refuse to start while a Redis persistence check fails. */
  requirePersistence?: boolean | string;
  /** Delete finished builds this many days after they finished (hourly); none when undefined. */
  retentionDays?: number;
}

export const DEFAULT_HOST = "127.0.0.1";
export const DEFAULT_PORT = 8080;

/** `--port` / OCULUS_PORT: 0..65535 (0: any free port, printed once bound). */
export function parsePort(value: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isInteger(n) || n < 0 || n > 65535) {
    throw new ConfigError(`invalid --port / OCULUS_PORT: must be an integer from 0 to 65535, got "${value}"`);
  }
  return n;
}

/**
 * The rate limit's own Redis connection (the queue's opens only once PostgreSQL is reachable): the
 * API processes behind one load balancer share one budget per token. It reconnects by itself; while
 * it is down, each process counts on its own (rate-limit-store.ts).
 */
function rateLimitClient(redisUrl: string): RedisClient {
  const redis = connectRedis(redisUrl);
  redis.on("error", () => undefined); // counted locally meanwhile; the queue reports Redis faults
  redis.connect().catch(() => undefined);
  return redis;
}

/** OCULUS_RATE_LIMIT: requests a minute per token (per address without auth); 0 turns it off. */
export function rateLimitFromEnv(env: NodeJS.ProcessEnv = process.env): RateLimitOptions | false {
  const raw = env.OCULUS_RATE_LIMIT?.trim();
  if (!raw) return DEFAULT_RATE_LIMIT;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    throw new ConfigError(
      `invalid OCULUS_RATE_LIMIT: must be a whole number of requests a minute, got "${raw}"`,
    );
  }
  return n === 0 ? false : { max: n, windowMs: 60_000 };
}

export async function runUp(config: Config, opts: UpOptions): Promise<void> {
  // Everything that can be refused is checked before a store is opened or a port bound.
  const auth = loadAuthConfig(process.env);
  const host = opts.host.trim() || DEFAULT_HOST;
  checkBind(host, auth);
  const localRateLimit = rateLimitFromEnv();
  const cors = corsFromEnv();
  const trustProxy = trustProxyFromEnv();
  const localWorkers = localWorkerCount(opts);
  const logMaxBytes = logMaxBytesFromEnv();
  const passEnv = opts.command
    ? passedEnvFromFlags(opts.env, process.env, (m) => console.error(`warning: ${m}`))
    : [];
  const streamLimits = streamLimitsFromEnv();
  const hardening = httpHardeningFromEnv();
  const requirePersistence = flagOn(opts.requirePersistence);
  if (requirePersistence && !config.redisUrl) {
    throw new ConfigError("--require-persistence / OCULUS_REQUIRE_PERSISTENCE: needs a Redis (REDIS_URL)");
  }
  const logger = createLogger();
  const monitor = config.redisUrl
    ? startPersistenceMonitor(config.redisUrl, config.prefix, logger)
    : undefined;
  if (requirePersistence && monitor) await refuseOnFailingCheck(monitor);
  const rateLimitRedis = localRateLimit && config.redisUrl ? rateLimitClient(config.redisUrl) : undefined;
  const rateLimit =
    localRateLimit && rateLimitRedis
      ? {
          ...localRateLimit,
          shared: { redis: rateLimitRedis, keyPrefix: redisKeys(config.prefix).rateLimit },
        }
      : localRateLimit;
  const pending = new PendingQueue(config.redisUrl !== undefined);
  const persistence: PersistenceProvider | undefined = monitor ? () => monitor.latest() : undefined;
  const authState = new AuthState(auth);
  const app = buildServer(pending, {
    ...streamLimits,
    auth: authState,
    logger,
    rateLimit,
    persistence,
    cors,
    trustProxy,
    ...hardening,
    // The dashboard's charts (GET /v1/stats/history): the last hour, sampled by this process.
    statsHistory: {},
  });
  let url: string;
  try {
    ({ url } = await listenApi(app, { host, port: opts.port, auth: authState }));
  } catch (err) {
    await monitor?.stop();
    throw listenError(err, host, opts.port);
  }

  const waiting = new AbortController();
  const workers: Worker[] = [];
  let queue: BuildQueue | undefined;
  let stopRetention: (() => void) | undefined;
  // Registered before the wait, so that a signal while waiting for PostgreSQL exits 0 at once.
  stopOnSignal(
    async () => {
      waiting.abort();
      stopRetention?.();
      await app.close(); // ends event streams, stops taking requests
      await Promise.all(workers.map((w) => w.stop()));
      await monitor?.stop();
      await queue?.close();
      rateLimitRedis?.disconnect();
    },
    () =>
      drainDescription(
        workers.reduce((n, w) => n + w.activeBuilds, 0),
        DEFAULT_DRAIN_MS,
      ),
  );
  process.on("SIGHUP", () => reloadTokens(authState, host));
  console.log(`opening the queue on ${describeStore(config)}; until it is open, ${url} answers 503`);
  try {
    queue = await openQueueWaiting(
      { ...config, logger, logMaxBytes },
      { signal: waiting.signal, report: console.log },
    );
  } catch (err) {
    if (err instanceof OpenAborted) return; // the signal handler shuts down and exits
    await app.close();
    await monitor?.stop();
    throw err;
  }
  queue.on("mode", (mode: string) => console.log(`mode: ${mode}`));
  queue.startReaper();
  // Every `oculus up` runs the scheduler: a tick is submitted once however many do (scheduler.ts).
  queue.startScheduler();
  pending.fill(queue);
  printBanner(url, config, queue, auth);
  printNetwork(cors, trustProxy, authEnabled(auth) ? [] : hardening.allowedHosts);
  if (opts.retentionDays !== undefined) {
    stopRetention = startRetention(queue.store.db, { olderThanMs: daysToMs(opts.retentionDays), logger });
    console.log(
      `retention: finished builds are deleted ${opts.retentionDays} day(s) after they finish (hourly)`,
    );
  }

  const handler = announce(opts.command ? commandHandler(opts.command, { passEnv }) : demoBuild);
  for (let i = 0; i < localWorkers; i++) {
    const worker = new Worker(queue, { handler, logger, labels: parseLabels(opts.label ?? []) });
    workers.push(worker);
    await worker.start();
  }
  if (localWorkers === 0) {
    console.log("no local workers: builds run on `oculus worker --command CMD` processes");
  }
  if (opts.demo) await submitDemoBuilds(queue, opts.demoStepMs ?? DEFAULT_DEMO_STEP_MS);
}

/** Long enough to watch the phases walk in the dashboard: 5 phases of 4 s, about 20 s a build. */
export const DEFAULT_DEMO_STEP_MS = 4000;
/** The Worker's default drainMs (local workers of `oculus up` use it). */
const DEFAULT_DRAIN_MS = 30_000;

/**
 * Local workers run only when asked: a demo worker on a real store would claim real builds and
 * complete them with a fake result. `--workers N` needs `--command` (or `--demo`).
 */
function localWorkerCount(opts: UpOptions): number {
  if (opts.command || opts.demo) return opts.workers ?? 1;
  if ((opts.workers ?? 0) > 0) {
    throw new ConfigError(
      "--workers: local workers need --command CMD (the build command they run), or --demo for the built-in demo build",
    );
  }
  return 0;
}

/** A boolean flag that may also come from the environment ("1", "true", "yes"). */
function flagOn(value: boolean | string | undefined): boolean {
  if (typeof value === "string") return ["1", "true", "yes"].includes(value.trim().toLowerCase());
  return value === true;
}

/** --require-persistence: the first check must not fail (warnings are printed, not refused). */
async function refuseOnFailingCheck(monitor: PersistenceMonitor): Promise<void> {
  const report = await monitor.checkNow();
  if (report.status !== "fail") return;
  await monitor.stop();
  const failing = report.checks
    .filter((c) => c.status === "fail")
    .map((c) => `${c.name}: ${c.message}${c.fix ? ` (fix: ${c.fix})` : ""}`);
  throw new ConfigError(
    `--require-persistence: Redis persistence checks fail, not starting:\n  ${failing.join("\n  ")}`,
  );
}

/**
 * Checks Redis persistence now and every minute (src/ops): /health and /metrics show the latest
 * report, the first one is printed, and later changes are logged by the monitor.
 */
function startPersistenceMonitor(redisUrl: string, prefix: string, logger: Logger): PersistenceMonitor {
  // The server holding the queue's keys: the Sentinel's master, or the Cluster master of its slot.
  const monitor = new PersistenceMonitor(() => connectAdminRedis(redisUrl, 5000, prefix), {
    logger,
    timeoutMs: 5000,
  });
  monitor.once("report", (report: PersistenceReport) => {
    const failing = report.checks.filter((c) => c.status !== "pass");
    const detail = failing.map(
      (c) => `${c.name} ${c.status}: ${c.message}${c.fix ? ` (fix: ${c.fix})` : ""}`,
    );
    console.log(
      `Redis persistence checks: ${report.status}${detail.length ? `\n  ${detail.join("\n  ")}` : ""}`,
    );
  });
  monitor.start();
  return monitor;
}

function printBanner(url: string, config: Config, queue: BuildQueue, auth: AuthConfig): void {
  const postgres = config.databaseUrl
    ? "PostgreSQL server"
    : `embedded PostgreSQL (PGlite, ${config.dataDir})`;
  console.log(`oculus build queue up: API listening on ${url} (dashboard ${url}/, docs ${url}/docs)`);
  console.log(`stores: ${postgres}, Redis ${config.redisUrl ? "configured" : "none"}; mode ${queue.mode}`);
  console.log("scheduler: on (recurring schedules: oculus schedule list)");
  console.log(
    authEnabled(auth)
      ? `auth: ${auth.tokens.length} token(s) configured`
      : "auth: no tokens configured: the API is open to this machine only (loopback)",
  );
}

/**
 * SIGHUP: read the tokens again (OCULUS_TOKENS_FILE rotates without a restart). A file that does not
 * parse, or that would turn auth off on a server reachable from other machines, changes nothing.
 */
function reloadTokens(state: AuthState, host: string): void {
  try {
    const next = loadAuthConfig(process.env);
    if (!authEnabled(next) && !isLoopback(host)) {
      throw new ConfigError(`no tokens left, and the API listens on ${host}, beyond loopback`);
    }
    state.replace(next);
    console.log(`auth: tokens reloaded, ${next.tokens.length} token(s) configured`);
  } catch (err) {
    console.error(`auth: token reload refused, the previous tokens stay: ${(err as Error).message}`);
  }
}

/** CORS and trusted proxies, when set: an operator checks them here, not by reading headers. */
function printNetwork(
  cors: CorsOptions | undefined,
  trustProxy: TrustProxy | undefined,
  allowedHosts: readonly string[],
): void {
  if (cors) console.log(`cors: ${cors.origins === "*" ? "any origin" : cors.origins.join(", ")}`);
  if (allowedHosts.length > 0) console.log(`open mode also answers Host: ${allowedHosts.join(", ")}`);
  if (trustProxy !== undefined && trustProxy !== false) {
    const which =
      trustProxy === true
        ? "all"
        : typeof trustProxy === "number"
          ? `${trustProxy} hop(s)`
          : trustProxy.join(", ");
    console.log(`trusted proxies (X-Forwarded-For): ${which}`);
  }
}

async function submitDemoBuilds(queue: BuildQueue, stepMs: number): Promise<void> {
  const results = await queue.submitMany([
    { strategyId: "demo-momentum", priority: 0, params: { stepMs } },
    { strategyId: "demo-mean-reversion", priority: 5, params: { stepMs } },
  ]);
  for (const r of results) console.log(`submitted demo build ${r.build.id} (${r.build.strategyId})`);
  console.log(
    `the demo build walks through 5 phases of ${stepMs} ms (params.stepMs; --demo-step-ms): watch them in the dashboard`,
  );
}

/** A port in use is the likely mistake: say which, and what to do. */
function listenError(err: unknown, host: string, port: number): Error {
  const code = (err as { code?: string }).code;
  if (code === "EADDRINUSE") {
    return new Error(
      `${host}:${port} is in use: pick another --port (or OCULUS_PORT), or 0 for any free port`,
    );
  }
  if (code === "EADDRNOTAVAIL" || code === "ENOTFOUND") {
    return new ConfigError(`invalid --host / OCULUS_HOST: ${host} is not an address of this machine`);
  }
  return err instanceof Error ? err : new Error(String(err));
}

/** A handler with a line on stdout as each build starts and ends (how it ended, on one line). */
export function announce(handler: WorkerHandler): WorkerHandler {
  return async (ctx) => {
    const name = `build ${ctx.build.id} (${printable(ctx.build.strategyId)})`;
    console.log(`${name} started`);
    try {
      const result = await handler(ctx);
      console.log(`${name} completed`);
      return result;
    } catch (err) {
      const why = printable(((err as Error).message ?? String(err)).split("\n")[0] ?? "");
      console.log(`${name} ${ctx.signal.aborted ? "ended early" : "failed"}: ${why}`);
      throw err;
    }
  };
}

/**
 * SIGTERM or SIGINT: shut down gracefully, then exit 0. The first signal says what the shutdown waits
 * for (`waitingFor`); a second one exits at once (code 1): running builds are then handed back by
 * the reaper once their leases expire, and their command processes are ended by their watchdogs.
 */
export function stopOnSignal(shutdown: () => Promise<void>, waitingFor: () => string = () => ""): void {
  let signalled = false;
  const onSignal = async () => {
    if (signalled) {
      console.log("second signal: exiting now; running builds return to the queue when their leases expire");
      process.exit(1);
    }
    signalled = true;
    const what = waitingFor();
    console.log(
      `shutting down${what ? `: ${what}` : ""}; press Ctrl-C again (or send another SIGTERM) to exit at once`,
    );
    await shutdown();
    process.exit(0);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
}

/** What a graceful shutdown of these workers waits for, in words. */
export function drainDescription(running: number, drainMs: number): string {
  if (running === 0) return "no build is running";
  const builds = running === 1 ? "1 running build" : `${running} running builds`;
  return (
    `waiting up to ${Math.round(drainMs / 1000)} s for ${builds} to finish ` +
    "(then they are stopped and handed back to the queue)"
  );
}
