/**
 * The operations commands: `oculus doctor`, `oculus backup`, `oculus backup verify` and `oculus prune`. They take the
 * global settings (--redis-url, --database-url, --prefix, --schema) through `config`, print for people
 * by default and one JSON object with --json, and exit non-zero when something is wrong.
 */
import { type Command, Option } from "commander";
import type { Redis } from "ioredis";
import { type Config, redactUrl } from "../core/config.js";
import { OculusError } from "../core/errors.js";
import { createLogger } from "../core/logger.js";
import { describeRedisTarget, parseRedisUrl } from "../core/redis-url.js";
import { type BackupResult, backupRedis } from "../ops/backup.js";
import {
  type CheckStatus,
  checkPersistence,
  type PersistenceCheck,
  worstStatus,
} from "../ops/persistence-checks.js";
import { checkPostgres, checkQueueIndex } from "../ops/queue-checks.js";
import { connectAdminRedis } from "../ops/redis-admin.js";
import { checkTopology } from "../ops/topology-checks.js";
import { type VerifyReport, verifyBackup } from "../ops/verify-backup.js";
import { openQueueOnce } from "../queue/open-with-retry.js";
import type { PruneReport } from "../queue/retention.js";
import { daysToMs, nonNegativeInt, parseDays, positiveInt } from "./flags.js";

export function registerOpsCommands(program: Command, config: () => Config): void {
  program
    .command("doctor")
    .description(
      "check that Redis persistence (and PostgreSQL) are set up for the queue; exit 1 on a failing check",
    )
    .option("--json", "print the report as JSON")
    .action(async (opts: { json?: boolean }) => {
      process.exitCode = await doctor(config(), opts.json === true);
    });

  const backup = program
    .command("backup")
    .description("back up a running Redis 7 consistently (AOF directory and dump.rdb, with checksums)")
    .option("--dest <dir>", "directory the dated backup directories go into (required)")
    .addOption(
      new Option("--retention-days <n>", "delete backups in --dest older than this many days")
        .default(7)
        .argParser(nonNegativeInt("--retention-days")),
    )
    .option("--redis-data-dir <dir>", "Redis's data directory as mounted here (default: CONFIG GET dir)")
    .option(
      "--stream-rdb",
      "take an RDB snapshot over the connection even when the data directory is readable",
    )
    .option("--pg-dump", "also pg_dump the queue's PostgreSQL schema into the backup")
    .option("--json", "print the result as JSON")
    .action(async (opts: BackupFlags) => {
      await backupCommand(config(), opts);
    });

  program
    .command("prune")
    .description("delete finished builds (and their events) older than --older-than-days, and gone workers")
    .addOption(
      new Option("--older-than-days <n>", "finished at least this many days ago (required)").argParser(
        parseDays("--older-than-days"),
      ),
    )
    .addOption(
      new Option("--batch-size <n>", "builds deleted per statement")
        .default(1000)
        .argParser(positiveInt("--batch-size")),
    )
    .option("--dry-run", "count what would be deleted; delete nothing")
    .option("--json", "print the report as JSON")
    .action(async (opts: PruneFlags) => {
      await pruneCommand(config(), opts);
    });

  backup
    .command("verify <dir>")
    .description(
      "restore test: checksums, redis-check-aof, load in a scratch redis-server, compare with PostgreSQL",
    )
    .option("--json", "print the report as JSON")
    .action(async (dir: string, _opts: unknown, command: Command) => {
      // `backup` has a --json of its own, and commander gives it the flag: read both.
      const json = command.optsWithGlobals<{ json?: boolean }>().json === true;
      process.exitCode = await verifyCommand(config(), dir, json);
    });
}

interface BackupFlags {
  dest?: string;
  retentionDays: number;
  redisDataDir?: string;
  streamRdb?: boolean;
  pgDump?: boolean;
  json?: boolean;
}

interface PruneFlags {
  olderThanDays?: number;
  batchSize: number;
  dryRun?: boolean;
  json?: boolean;
}

async function pruneCommand(c: Config, opts: PruneFlags): Promise<void> {
  if (opts.olderThanDays === undefined) {
    throw new OculusError(
      "config_invalid",
      2,
      "prune needs --older-than-days <n> (finished builds older than that go)",
    );
  }
  // PostgreSQL only: pruned builds are finished, and finished builds are not in the Redis index.
  const queue = await openQueueOnce({ ...c, redisUrl: undefined, logger: createLogger({ level: "warn" }) });
  try {
    const report = await queue.prune({
      olderThanMs: daysToMs(opts.olderThanDays),
      batchSize: opts.batchSize,
      dryRun: opts.dryRun === true,
    });
    console.log(opts.json ? JSON.stringify(report) : describePrune(report, opts.olderThanDays));
  } finally {
    await queue.close();
  }
}

function describePrune(r: PruneReport, days: number): string {
  const what = `${r.builds} finished build(s) older than ${days} day(s), ${r.events} event(s), ${formatBytes(r.logBytes)} of build logs, ${r.workers} gone worker(s)`;
  return r.dryRun
    ? `would delete ${what} (dry run: nothing deleted)`
    : `deleted ${what} in ${r.durationMs.toFixed(0)} ms`;
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

function requireRedis(c: Config, command: string): string {
  if (!c.redisUrl) {
    throw new OculusError("config_invalid", 2, `${command} needs Redis: set --redis-url or REDIS_URL`);
  }
  return c.redisUrl;
}

// ------------------------------------------------------------------ doctor

interface DoctorReport {
  status: CheckStatus;
  redis: { url: string; status: CheckStatus; checks: PersistenceCheck[]; checkedAt: string };
  /** Sentinel or Cluster: the master resolved and what keeps it available (empty on one server). */
  topology: PersistenceCheck[];
  queue: PersistenceCheck[];
  postgres: PersistenceCheck[] | null;
}

async function doctor(c: Config, json: boolean): Promise<number> {
  const url = requireRedis(c, "doctor");
  const report = await runDoctor(c, url);
  if (json) console.log(JSON.stringify(report, null, 2));
  else printDoctor(report, c);
  return report.status === "fail" ? 1 : 0;
}

async function runDoctor(c: Config, url: string): Promise<DoctorReport> {
  const redisUrl = redactUrl(url);
  const postgres = c.databaseUrl ? await checkPostgres(c.databaseUrl, c.schema) : undefined;
  let redis: Redis;
  try {
    redis = await connectAdminRedis(url, 5000, c.prefix);
  } catch (err) {
    const check = failed("connection", (err as Error).message, "start Redis, or fix REDIS_URL (--redis-url)");
    const checks = [check];
    const all = [...checks, ...(postgres?.checks ?? [])];
    return {
      status: worstStatus(all.map((x) => x.status)),
      redis: { url: redisUrl, status: "fail", checks, checkedAt: new Date().toISOString() },
      topology: [],
      queue: [],
      postgres: postgres?.checks ?? null,
    };
  }
  try {
    const persistence = await checkPersistence(redis);
    const topology = await checkTopology(url, redis);
    const queue = await checkQueueIndex(redis, c.prefix, postgres?.queued);
    const all = [...persistence.checks, ...topology, ...queue, ...(postgres?.checks ?? [])];
    return {
      status: worstStatus(all.map((x) => x.status)),
      redis: { url: redisUrl, ...persistence },
      topology,
      queue,
      postgres: postgres?.checks ?? null,
    };
  } finally {
    redis.disconnect();
  }
}

function failed(name: string, message: string, fix: string): PersistenceCheck {
  return { name, status: "fail", value: null, message, fix };
}

function printDoctor(report: DoctorReport, c: Config): void {
  console.log(`Redis ${report.redis.url}: persistence`);
  printChecks(report.redis.checks);
  if (report.topology.length > 0) {
    console.log(`Redis topology (${describeRedisTarget(parseRedisUrl(c.redisUrl ?? ""))})`);
    printChecks(report.topology);
  }
  if (report.queue.length > 0) {
    console.log(`Queue index (prefix ${c.prefix})`);
    printChecks(report.queue);
  }
  if (report.postgres) {
    console.log(`PostgreSQL (schema ${c.schema})`);
    printChecks(report.postgres);
  } else {
    console.log("PostgreSQL: not checked (no --database-url / DATABASE_URL)");
  }
  const all = [...report.redis.checks, ...report.topology, ...report.queue, ...(report.postgres ?? [])];
  const count = (s: CheckStatus) => all.filter((x) => x.status === s).length;
  console.log(
    `\n${report.status.toUpperCase()}: ${count("fail")} failing, ${plural(count("warn"), "warning")}, ${count("pass")} passing`,
  );
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function printChecks(checks: PersistenceCheck[]): void {
  const width = Math.max(...checks.map((x) => x.name.length));
  for (const x of checks) {
    const value = x.value === null ? "" : ` = ${x.value}`;
    console.log(`  ${x.status.toUpperCase().padEnd(4)}  ${x.name.padEnd(width)}${value}`);
    if (x.status === "pass") continue;
    console.log(`        ${x.message}`);
    if (x.fix) console.log(`        fix: ${x.fix}`);
  }
}

// ------------------------------------------------------------------ backup

async function backupCommand(c: Config, opts: BackupFlags): Promise<void> {
  const url = requireRedis(c, "backup");
  if (!opts.dest)
    throw new OculusError("config_invalid", 2, "backup needs --dest DIR (where the backups go)");
  if (opts.pgDump && !c.databaseUrl) {
    throw new OculusError(
      "config_invalid",
      2,
      "--pg-dump needs PostgreSQL: set --database-url or DATABASE_URL",
    );
  }
  const redis = await connectAdminRedis(url, 5000, c.prefix);
  // Ctrl-C or SIGTERM during the copy: abort it, so that the rewrite setting is still set back.
  const abort = new AbortController();
  const onSignal = () => abort.abort(new Error("interrupted: the backup was abandoned"));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const log = (line: string) => (opts.json ? console.error(line) : console.log(line));
    const result = await backupRedis({
      redis,
      redisUrl: url,
      dest: opts.dest,
      retentionDays: opts.retentionDays,
      ...(opts.redisDataDir ? { redisDataDir: opts.redisDataDir } : {}),
      streamRdb: opts.streamRdb === true,
      ...(opts.pgDump && c.databaseUrl ? { postgres: { databaseUrl: c.databaseUrl, schema: c.schema } } : {}),
      log,
      signal: abort.signal,
    });
    if (opts.json) console.log(JSON.stringify(result, null, 2));
    else printBackup(result);
  } finally {
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
    redis.disconnect();
  }
}

function printBackup(result: BackupResult): void {
  const bytes = result.files.reduce((sum, f) => sum + f.bytes, 0);
  console.log(`backup written: ${result.dir}`);
  console.log(
    `  method: ${result.method === "files" ? "copy of the data directory" : "RDB snapshot over the connection"}`,
  );
  console.log(`  ${result.files.length} files, ${bytes} bytes, SHA256SUMS and backup.json`);
  for (const note of result.notes) console.log(`  note: ${note}`);
  if (result.removed.length > 0) console.log(`  removed by retention: ${result.removed.join(", ")}`);
  console.log(`check it: oculus backup verify ${result.dir}`);
}

// ------------------------------------------------------------------ verify

async function verifyCommand(c: Config, dir: string, json: boolean): Promise<number> {
  const report = await verifyBackup({
    dir,
    prefix: c.prefix,
    ...(c.databaseUrl ? { postgres: { databaseUrl: c.databaseUrl, schema: c.schema } } : {}),
    log: (line) => (json ? console.error(line) : console.log(line)),
  });
  if (json) console.log(JSON.stringify(report, null, 2));
  else printVerify(report, c);
  return report.ok ? 0 : 1;
}

function printVerify(r: VerifyReport, c: Config): void {
  const sums = r.checksums;
  const bad = sums.missing.length + sums.mismatched.length;
  console.log(`checksums: ${sums.checked - bad} of ${sums.checked} match`);
  if (r.fileCheck)
    console.log(`${r.fileCheck.tool}: ${r.fileCheck.ok ? "ok" : "FAILED"} (${r.fileCheck.summary})`);
  if (r.load.ok) {
    console.log(`loads: yes, from the ${r.load.from === "aof" ? "AOF" : "RDB file"}; ${r.load.keys} keys`);
    console.log(
      `build queue (${c.prefix}:build_queue): ${r.load.queueLength} ready, ${r.load.delayedLength} delayed; ` +
        `index marker ${r.load.indexMarker ? "present" : "missing"}`,
    );
  }
  if (r.postgres) {
    console.log(
      `PostgreSQL now: ${r.postgres.queued} queued; ${r.postgres.queuedNotInBackup} queued builds are not in the ` +
        `backup, ${r.postgres.inBackupNotQueued} ids in the backup are no longer queued (expected for an older ` +
        "backup: `oculus reconcile` after a restore makes the index equal to PostgreSQL)",
    );
  }
  for (const note of r.notes) console.log(`note: ${note}`);
  for (const problem of r.problems) console.log(`PROBLEM: ${problem}`);
  console.log(r.ok ? "backup OK" : "backup DAMAGED or not loadable");
}
