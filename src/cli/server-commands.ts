/**
 * The commands that open stores or serve (migrate, reconcile, up, worker, and the ops commands of
 * ops-commands.ts). main.ts loads this module only when one of them (or the full help) is asked for,
 * so client commands start without loading pg, PGlite, ioredis or Fastify.
 */
import { type Command, Option } from "commander";
import type { Config } from "../core/config.js";
import { postgresSettingsOf } from "../core/config.js";
import { OculusError } from "../core/errors.js";
import { createLogger } from "../core/logger.js";
import { openPglite, openPostgres } from "../postgres/db.js";
import { migrate } from "../postgres/migrate.js";
import { explainOpenFailure, openQueueOnce } from "../queue/open-with-retry.js";
import { collectRepeated } from "../worker/build-env.js";
import { nonNegativeInt, parseDays, parsePortFlag, parsePrefetch, positiveInt } from "./flags.js";
import { registerOpsCommands } from "./ops-commands.js";
import { DEFAULT_HOST, DEFAULT_PORT, parsePort, runUp, type UpOptions } from "./up.js";
import { runWorker, type WorkerFlags } from "./worker-command.js";

export function registerServerCommands(program: Command, config: () => Config): void {
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
        // One-shot: no waiting for an unreachable PostgreSQL (oculus up and oculus worker wait).
        const report = await migrate(db).catch((err: unknown) => {
          throw explainOpenFailure(c, err);
        });
        for (const m of report.applied)
          console.log(`applied ${String(m.version).padStart(4, "0")}_${m.name}`);
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
      const queue = await openQueueOnce({ ...c, logger: createLogger({ level: "warn" }) });
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
    .addOption(
      new Option("--workers <n>", "local workers (default: 1 with --command or --demo, else none)").argParser(
        nonNegativeInt("--workers"),
      ),
    )
    .option("--command <cmd>", "shell command each local worker runs per build")
    .option(
      "--label <key=value...>",
      "a label of the local workers (repeatable): they run the builds whose `requires` their labels include",
    )
    .option(
      "--env <name>",
      "pass this variable of the environment to build commands (repeatable; also OCULUS_BUILD_ENV=A,B)",
      collectRepeated,
    )
    .option("--demo", "local workers run the built-in demo build, and two demo builds are submitted at start")
    .addOption(
      new Option("--demo-step-ms <ms>", "how long each demo phase takes (params.stepMs)")
        .default(4000)
        .argParser(nonNegativeInt("--demo-step-ms")),
    )
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
    .addOption(
      new Option(
        "--prefetch <n|auto>",
        'builds claimed ahead of free slots, started as slots free (for builds far shorter than a claim round trip); "auto": as many as the slots finish during one claim, none for builds of a second or more',
      )
        .default(0)
        .env("OCULUS_PREFETCH")
        .argParser(parsePrefetch("--prefetch / OCULUS_PREFETCH")),
    )
    .option("--id <id>", "worker id (default: hostname:pid:random)")
    .option(
      "--label <key=value...>",
      "a label of this worker (repeatable): it runs the builds whose `requires` its labels include",
    )
    .option(
      "--env <name>",
      "pass this variable of the environment to build commands (repeatable; also OCULUS_BUILD_ENV=A,B)",
      collectRepeated,
    )
    .addOption(
      new Option("--grace-ms <ms>", "SIGTERM to SIGKILL on stop or shutdown")
        .default(10_000)
        .argParser(positiveInt("--grace-ms")),
    )
    .addOption(
      new Option(
        "--build-timeout <seconds>",
        "default limit of a build's run (builds without timeoutSeconds): then SIGTERM, SIGKILL after --grace-ms, and the build fails",
      ).argParser(positiveInt("--build-timeout")),
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
      new Option(
        "--metrics-port <port>",
        "serve this worker's /metrics and /health on this port (0: any free)",
      )
        .env("OCULUS_WORKER_METRICS_PORT")
        .argParser(parsePortFlag("--metrics-port / OCULUS_WORKER_METRICS_PORT")),
    )
    .addOption(
      new Option("--metrics-host <host>", "address of the metrics endpoint")
        .env("OCULUS_WORKER_METRICS_HOST")
        .default("127.0.0.1"),
    )
    .action(async (opts: WorkerFlags) => runWorker(config(), opts));
  registerOpsCommands(program, config);
}
