#!/usr/bin/env node
/**
 * The `oculus` command. Settings come from flags or the environment (flags win) and are validated
 * once: a bad value stops the command with a message naming the flag and the variable.
 */
import { hostname } from "node:os";
import { Command, Option } from "commander";
import { type Config, loadConfig } from "../core/config.js";
import { OculusError } from "../core/errors.js";
import { createLogger } from "../core/logger.js";
import { openPglite, openPostgres } from "../postgres/db.js";
import { migrate } from "../postgres/migrate.js";
import { BuildQueue } from "../queue/build-queue.js";
import { runClaimLoop } from "../worker/claim-loop.js";
import { demoBuild } from "../worker/demo-build.js";

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
      ? await openPostgres(c.databaseUrl, c.schema, logger, 1)
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
      else {
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
  .description("run the build queue: stores, reconciler and local workers")
  .addOption(
    new Option("--workers <n>", "local demo workers").default("1").argParser(positiveInt("--workers")),
  )
  .option("--demo", "submit a few demo builds at start")
  .action(async (opts: { workers: number; demo?: boolean }) => {
    const c = config();
    const logger = createLogger();
    const queue = await BuildQueue.open({ ...c, logger });
    queue.on("mode", (mode: string) => console.log(`mode: ${mode}`));
    console.log(
      `oculus build queue up: PostgreSQL ${c.databaseUrl ? "server" : `embedded (PGlite, ${c.dataDir})`}, ` +
        `Redis ${c.redisUrl ? "configured" : "none"}, mode ${queue.mode}`,
    );
    const controller = new AbortController();
    const workerId = `${hostname()}:${process.pid}`;
    const loops = Array.from({ length: opts.workers }, (_, i) =>
      runClaimLoop(
        {
          claim: (n) => queue.claim(`${workerId}:${i}`, n),
          wait: (ms, signal) => queue.waitForWork(ms, signal),
          complete: (b, result) => queue.complete(b.id, b.lease, result),
          fail: (b, err) => queue.fail(b.id, b.lease, err.message),
          onError: (err) => logger.warn({ err: (err as Error).message }, "worker error"),
        },
        async (build) => {
          console.log(`build ${build.id} (${build.strategyId}) started on worker ${i}`);
          const result = await demoBuild(build, controller.signal);
          console.log(`build ${build.id} completed`);
          return result;
        },
        { concurrency: 1, signal: controller.signal },
      ),
    );
    if (opts.demo) {
      const results = await queue.submitMany([
        { strategyId: "demo-momentum", priority: 0 },
        { strategyId: "demo-mean-reversion", priority: 5 },
      ]);
      for (const r of results) console.log(`submitted demo build ${r.build.id} (${r.build.strategyId})`);
    }
    const shutdown = async () => {
      console.log("shutting down");
      controller.abort();
      await Promise.all(loops);
      await queue.close();
      process.exit(0);
    };
    process.once("SIGINT", shutdown);
    process.once("SIGTERM", shutdown);
  });

function positiveInt(flag: string) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0)
      throw new Error(`${flag} must be a non-negative integer, got "${value}"`);
    return n;
  };
}

program.parseAsync().catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  console.error(`oculus: ${message}`);
  process.exit(err instanceof OculusError && err.code === "config_invalid" ? 2 : 1);
});
