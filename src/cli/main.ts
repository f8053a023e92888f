#!/usr/bin/env node
/**
 * The `oculus` command. Settings come from flags or the environment (flags win) and are validated
 * once: a bad value stops the command with a message naming the flag and the variable.
 */
import { Command, Option } from "commander";
import { type Config, loadConfig, postgresSettingsOf } from "../core/config.js";
import { OculusError } from "../core/errors.js";
import { createLogger } from "../core/logger.js";
import { openPglite, openPostgres } from "../postgres/db.js";
import { migrate } from "../postgres/migrate.js";
import { BuildQueue } from "../queue/build-queue.js";
import { commandHandler } from "../worker/command-handler.js";
import { demoBuild } from "../worker/demo-build.js";
import { serveWorkerMetrics } from "../worker/metrics-server.js";
import { Worker } from "../worker/worker.js";
import { ApiError } from "./api-client.js";
import { registerClientCommands, UsageError } from "./client-commands.js";
import { nonNegativeInt, parseDays, parsePortFlag, positiveInt } from "./flags.js";
import { registerOpsCommands } from "./ops-commands.js";
import {
  announce,
  DEFAULT_HOST,
  DEFAULT_PORT,
  parsePort,
  runUp,
  stopOnSignal,
  type UpOptions,
} from "./up.js";

const program = new Command("oculus")
  .description("Oculus build queue: durable priority queue on PostgreSQL, with Redis as fast path")
  .addOption(
    new Option("--database-url <url>", "PostgreSQL URL (default: embedded PGlite)").env("DATABASE_URL"),
  )
  .addOption(
    new Option("--redis-url <url>", "Redis URL (default: none, PostgreSQL path only)").env("REDIS_URL"),
  )
  .addOption(new Option("--prefix <prefix>", "Redis key prefix").env("OCULUS_PREFIX"))
  .addOption(new Option("--schema <name>", "PostgreSQL schema").env("OCULUS_SCHEMA"))
  .addOption(new Option("--data-dir <dir>", "embedded store directory").env("OCULUS_DATA_DIR"))
  .showHelpAfterError();

/** Flags given on the command line; loadConfig reads the environment itself, to name the source in errors. */
function config(): Config {
  const o = program.opts();
  const fromCli = (key: string) =>
    program.getOptionValueSource(key) === "cli" ? (o[key] as string) : undefined;
  return loadConfig(
    {
      databaseUrl: fromCli("databaseUrl"),
      redisUrl: fromCli("redisUrl"),
      prefix: fromCli("prefix"),
      schema: fromCli("schema"),
      dataDir: fromCli("dataDir"),
    },
    process.env,
  );
}

program
  .command("migrate")
  .description("apply pending database migrations (also done automatically at start)")
  .action(async () => {
    const c = config();
    const logger = createLogger();
    const db = c.databaseUrl
      ? await openPostgres(c.databaseUrl, c.schema, logger, { ...postgresSettingsOf(c), poolSize: 1 })
      : await openPglite(c.dataDir, c.schema);
    try {
      const report = await migrate(db);
      for (const m of report.applied) console.log(`applied ${String(m.version).padStart(4, "0")}_${m.name}`);
      console.log(`schema ${c.schema} is at migration ${report.current}`);
    } finally {
      await db.close();
    }
  });

program
  .command("reconcile")
  .description("make the Redis index equal to the queued builds in PostgreSQL, now")
  .option("--json", "print the report as JSON")
  .action(async (opts: { json?: boolean }) => {
    const c = config();
    if (!c.redisUrl)
      throw new OculusError("config_invalid", 1, "reconcile needs Redis: set --redis-url or REDIS_URL");
    const queue = await BuildQueue.open({ ...c, logger: createLogger({ level: "warn" }) });
    try {
      if (queue.mode !== "redis")
        throw new OculusError("store_unavailable", 1, `Redis at ${c.redisUrl} is unreachable`);
      const report = await queue.reconcile();
      if (opts.json) console.log(JSON.stringify(report));
      else if (report.walks === 0) {
        console.log("reconciled by another process (its walk started after this request)");
      } else {
        console.log(
          `reconciled: ${report.queued} queued in PostgreSQL, ${report.added} added to Redis, ` +
            `${report.removed} removed from Redis, in ${report.durationMs.toFixed(0)} ms` +
            (report.lostData ? " (the index marker was missing: Redis was new or had lost its data)" : ""),
        );
      }
    } finally {
      await queue.close();
    }
  });

program
  .command("up")
  .description("run the build queue: HTTP API, stores, reconciler, reaper and local workers")
  .addOption(
    new Option("--host <host>", "address the HTTP API listens on").env("OCULUS_HOST").default(DEFAULT_HOST),
  )
  .addOption(
    new Option("--port <port>", "HTTP API port (0: any free port)")
      .env("OCULUS_PORT")
      .default(DEFAULT_PORT)
      .argParser(parsePort),
  )
  .addOption(new Option("--workers <n>", "local workers").default(1).argParser(nonNegativeInt("--workers")))
  .option("--command <cmd>", "shell command each local worker runs per build (default: the demo build)")
  .option("--demo", "submit two demo builds at start")
  .addOption(
    new Option(
      "--require-persistence",
      "refuse to start while a Redis persistence check fails (oculus doctor)",
    ).env("OCULUS_REQUIRE_PERSISTENCE"),
  )
  .addOption(
    new Option(
      "--retention-days <n>",
      "delete finished builds (and their events) this many days after they finish, hourly (default: keep)",
    )
      .env("OCULUS_RETENTION_DAYS")
      .argParser(parseDays("--retention-days / OCULUS_RETENTION_DAYS")),
  )
  .action(async (opts: UpOptions) => runUp(config(), opts));

program
  .command("worker")
  .description("run a worker: claim builds and run them (a shell command per build, or the demo build)")
  .option("--command <cmd>", "shell command run per build (default: the built-in demo build)")
  .addOption(
    new Option("--capacity <n>", "builds run at once").default(1).argParser(positiveInt("--capacity")),
  )
  .option("--id <id>", "worker id (default: hostname:pid:random)")
  .option("--label <key=value...>", "labels shown with the worker")
  .addOption(
    new Option("--grace-ms <ms>", "SIGTERM to SIGKILL on stop or shutdown")
      .default(10_000)
      .argParser(positiveInt("--grace-ms")),
  )
  .addOption(
    new Option("--drain-ms <ms>", "on SIGTERM, time running builds get before they are handed back")
      .default(30_000)
      .argParser(nonNegativeInt("--drain-ms")),
  )
  .addOption(
    new Option("--heartbeat-ms <ms>", "heartbeat interval")
      .default(2000)
      .argParser(positiveInt("--heartbeat-ms")),
  )
  .addOption(
    new Option("--dead-after-ms <ms>", "a worker silent this long is dead; its builds are requeued")
      .default(10_000)
      .argParser(positiveInt("--dead-after-ms")),
  )
  .addOption(
    new Option("--metrics-port <port>", "serve this worker's /metrics and /health on this port (0: any free)")
      .env("OCULUS_WORKER_METRICS_PORT")
      .argParser(parsePortFlag("--metrics-port / OCULUS_WORKER_METRICS_PORT")),
  )
  .addOption(
    new Option("--metrics-host <host>", "address of the metrics endpoint")
      .env("OCULUS_WORKER_METRICS_HOST")
      .default("127.0.0.1"),
  )
  .action(async (opts: WorkerFlags) => {
    if (opts.deadAfterMs <= 2 * opts.heartbeatMs) {
      throw new OculusError("config_invalid", 2, "--dead-after-ms must be more than twice --heartbeat-ms");
    }
    const c = config();
    const logger = createLogger();
    const health = { heartbeatMs: opts.heartbeatMs, deadAfterMs: opts.deadAfterMs };
    const queue = await BuildQueue.open({ ...c, logger, health });
    queue.startReaper();
    const handler = opts.command
      ? commandHandler(opts.command, { graceMs: opts.graceMs })
      : announce(demoBuild);
    const worker = new Worker(queue, {
      handler,
      logger,
      capacity: opts.capacity,
      drainMs: opts.drainMs,
      // A stopped build command takes up to its grace period, then SIGKILL, to end.
      abortWaitMs: opts.graceMs + 5000,
      labels: parseLabels(opts.label ?? []),
      ...(opts.id ? { id: opts.id } : {}),
    });
    // The endpoint first: a port in use must stop the worker before it claims anything.
    const metrics =
      opts.metricsPort === undefined
        ? undefined
        : await serveWorkerMetrics(worker, queue, { host: opts.metricsHost, port: opts.metricsPort }).catch(
            async (err: NodeJS.ErrnoException) => {
              await queue.close();
              throw metricsListenError(err, opts.metricsHost, opts.metricsPort ?? 0);
            },
          );
    await worker.start();
    console.log(`worker ${worker.id} running (capacity ${opts.capacity}, mode ${queue.mode})`);
    if (metrics) console.log(`metrics on ${metrics.url}/metrics (health ${metrics.url}/health)`);
    stopOnSignal(async () => {
      await worker.stop();
      await metrics?.close();
      await queue.close();
    });
  });

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

interface WorkerFlags {
  command?: string;
  capacity: number;
  id?: string;
  label?: string[];
  graceMs: number;
  drainMs: number;
  heartbeatMs: number;
  deadAfterMs: number;
  metricsPort?: number;
  metricsHost: string;
}

function parseLabels(pairs: string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const pair of pairs) {
    const [key, ...rest] = pair.split("=");
    if (!key || rest.length === 0) {
      throw new OculusError("config_invalid", 2, `--label: expected key=value, got "${pair}"`);
    }
    labels[key] = rest.join("=");
  }
  return labels;
}

registerClientCommands(program);
registerOpsCommands(program, config);

program.parseAsync().catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  console.error(`oculus: ${message}`);
  const usage =
    err instanceof UsageError ||
    (err instanceof OculusError && err.code === "config_invalid") ||
    (err instanceof ApiError && err.code === "config_invalid");
  process.exit(usage ? 2 : 1);
});
