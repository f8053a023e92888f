/**
 * A consistent backup of a running Redis 7 (`oculus backup`).
 *
 * Redis 7 keeps the AOF as several files in `appenddirname` (default `appendonlydir/`) named by a
 * manifest. A rewrite replaces the base file, starts a new incremental file, rewrites the manifest
 * and deletes the old files: a copy taken meanwhile can mix generations or miss files. So the backup
 * pauses automatic rewrites (`auto-aof-rewrite-percentage 0`), waits until no rewrite or snapshot
 * runs, copies the manifest and the files it names, checks that no rewrite started during the copy
 * (else copies again), and sets the setting back whatever happens. The incremental file Redis is
 * appending to is copied up to its last complete command. `dump.rdb` is replaced by rename when Redis
 * saves, so one read of it is whole.
 *
 * The copy is made in a hidden staging directory and renamed to `redis-YYYYMMDDTHHMMSSZ` when complete
 * (with SHA256SUMS and backup.json), so a directory with that name is always a whole backup. Older
 * backups than the retention are deleted only after a new one succeeded.
 *
 * When the data directory is not readable here (a remote or containerised Redis) or CONFIG is refused
 * (managed Redis), the backup is an RDB snapshot streamed over the connection instead.
 */
import { access, mkdir, readdir, readFile, rename, rm, stat, truncate, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Redis } from "ioredis";
import { redactUrl } from "../core/config.js";
import { AofScanner, filesToLoad, parseManifest } from "./aof.js";
import {
  BACKUP_JSON,
  backupDirDate,
  backupDirName,
  CHECKSUMS_FILE,
  copyFile,
  type FileSum,
  writeChecksums,
} from "./backup-files.js";
import { dumpPostgresSchema, pgDumpVersion } from "./pg-dump.js";
import { streamRdbSnapshot } from "./rdb-stream.js";
import { readConfig, readInfo, waitForInfo } from "./redis-admin.js";

export interface BackupOptions {
  /** An administrative connection to the Redis to back up. */
  redis: Redis;
  /** The same Redis's URL (the streamed snapshot opens its own connection; shown redacted). */
  redisUrl: string;
  /** Where the backup directories go. */
  dest: string;
  /** Backups in `dest` older than this many days are deleted after a successful backup. Default 7. */
  retentionDays?: number;
  /** Redis's data directory as seen from here (default: CONFIG GET dir). */
  redisDataDir?: string;
  /** Take an RDB snapshot over the connection even when the data directory is readable. */
  streamRdb?: boolean;
  /** Also pg_dump this schema. */
  postgres?: { databaseUrl: string; schema: string };
  /** How long to wait for a running rewrite or snapshot to end. Default 10 minutes. */
  waitTimeoutMs?: number;
  /** Progress lines for people. */
  log?: (line: string) => void;
  /** Aborts the backup (the rewrite setting is still set back). */
  signal?: AbortSignal;
  /** The backup's timestamp (tests). */
  now?: Date;
}

export type BackupMethod = "files" | "rdb-stream";

export interface BackupResult {
  dir: string;
  method: BackupMethod;
  files: FileSum[];
  /** What an operator should know about this backup. */
  notes: string[];
  /** Old backup directories deleted by the retention. */
  removed: string[];
}

/** What backup.json holds. */
export interface BackupManifest {
  format: "oculus-redis-backup/1";
  createdAt: string;
  method: BackupMethod;
  redis: { url: string; version: string; dir: string | null; appendonly: string | null };
  aof: { dir: string; manifest: string; trimmedBytes: number } | null;
  rdb: string | null;
  postgres: { file: string; schema: string } | null;
  files: FileSum[];
  notes: string[];
}

const SETTINGS = [
  "dir",
  "appendonly",
  "appenddirname",
  "appendfilename",
  "dbfilename",
  "auto-aof-rewrite-percentage",
] as const;

/** A rewrite that starts during the copy makes it start over; this many tries at most. */
const COPY_ATTEMPTS = 5;

interface Settings {
  dir: string;
  appendonly: string;
  appenddirname: string;
  appendfilename: string;
  dbfilename: string;
  rewritePercentage: string;
}

/** What was put in the staging directory. */
interface Copied {
  aof: BackupManifest["aof"];
  rdb: string | null;
  notes: string[];
}

type Source = { kind: "files"; dataDir: string; settings: Settings } | { kind: "stream"; reason: string };

export async function backupRedis(options: BackupOptions): Promise<BackupResult> {
  const log = options.log ?? (() => undefined);
  const now = options.now ?? new Date();
  if (options.postgres) log(`pg_dump: ${await pgDumpVersion()}`);
  await mkdir(options.dest, { recursive: true });
  const info = await readInfo(options.redis);
  const config = await readConfig(options.redis, SETTINGS);
  const settings = config.ok ? toSettings(config.values) : undefined;
  const source = await chooseSource(options, settings, config.ok ? "" : config.reason);

  const name = await freeName(options.dest, now);
  const staging = path.join(options.dest, `.${name}.partial`);
  const dir = path.join(options.dest, name);
  await mkdir(staging);
  let manifest: BackupManifest;
  try {
    const copied =
      source.kind === "files"
        ? await copyFromDataDir(options, source.settings, source.dataDir, staging, log)
        : await streamSnapshot(options, staging, source.reason, log);
    const postgres = options.postgres ? await dumpPostgres(options.postgres, staging, log) : null;
    const files = await writeChecksums(staging, await listFiles(staging));
    manifest = describe(options, now, source, info, settings, { ...copied, postgres, files });
    await writeFile(path.join(staging, BACKUP_JSON), `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(staging, dir);
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    throw err;
  }
  // Only once the new backup is complete may older ones go.
  const removed = await applyRetention(options.dest, options.retentionDays ?? 7, now, name);
  return { dir, method: manifest.method, files: manifest.files, notes: manifest.notes, removed };
}

function describe(
  options: BackupOptions,
  now: Date,
  source: Source,
  info: Map<string, string>,
  settings: Settings | undefined,
  contents: Copied & Pick<BackupManifest, "postgres" | "files">,
): BackupManifest {
  return {
    format: "oculus-redis-backup/1",
    createdAt: now.toISOString(),
    method: source.kind === "files" ? "files" : "rdb-stream",
    redis: {
      url: redactUrl(options.redisUrl),
      version: info.get("redis_version") ?? "unknown",
      dir: settings?.dir ?? null,
      appendonly: settings?.appendonly ?? (info.get("aof_enabled") === "1" ? "yes" : "no"),
    },
    aof: contents.aof,
    rdb: contents.rdb,
    postgres: contents.postgres,
    files: contents.files,
    notes: contents.notes,
  };
}

function toSettings(values: Map<string, string>): Settings {
  return {
    dir: values.get("dir") ?? "",
    appendonly: values.get("appendonly") ?? "no",
    appenddirname: values.get("appenddirname") ?? "appendonlydir",
    appendfilename: values.get("appendfilename") ?? "appendonly.aof",
    dbfilename: values.get("dbfilename") ?? "dump.rdb",
    rewritePercentage: values.get("auto-aof-rewrite-percentage") ?? "100",
  };
}

/** Files in the data directory when it is readable here; else the snapshot over the connection, and why. */
async function chooseSource(
  options: BackupOptions,
  settings: Settings | undefined,
  refused: string,
): Promise<Source> {
  if (options.streamRdb) return { kind: "stream", reason: "--stream-rdb was given" };
  if (!settings) {
    return {
      kind: "stream",
      reason: `CONFIG is refused (${refused}), as on managed Redis: the data directory is unknown and rewrites cannot be paused`,
    };
  }
  const dataDir = options.redisDataDir ?? settings.dir;
  // CONFIG GET dir answers "" when Redis's own directory is gone: nothing to copy, and a relative path
  // would point into this process's directory.
  if (!path.isAbsolute(dataDir)) {
    return { kind: "stream", reason: `Redis reports no usable data directory ("${dataDir}")` };
  }
  // With the AOF on, its manifest must be here; with it off, the directory the snapshot will be written to.
  const probe =
    settings.appendonly === "yes"
      ? path.join(dataDir, settings.appenddirname, `${settings.appendfilename}.manifest`)
      : dataDir;
  try {
    await access(probe);
    await readdir(settings.appendonly === "yes" ? path.dirname(probe) : dataDir);
    return { kind: "files", dataDir, settings };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (options.redisDataDir) {
      throw new Error(`--redis-data-dir ${options.redisDataDir}: ${probe} is not readable (${code})`);
    }
    return {
      kind: "stream",
      reason:
        `the data directory Redis reports (${dataDir}) is not readable here (${probe}: ${code}; a remote or ` +
        "containerised Redis?); give --redis-data-dir where it is mounted here to copy its files instead",
    };
  }
}

async function freeName(dest: string, now: Date): Promise<string> {
  const base = backupDirName(now);
  for (let n = 0; ; n++) {
    const name = n === 0 ? base : `${base}-${n}`;
    const taken = await stat(path.join(dest, name)).then(
      () => true,
      () => false,
    );
    if (!taken) return name;
  }
}

// ------------------------------------------------------------------ copy from the data directory

async function copyFromDataDir(
  options: BackupOptions,
  settings: Settings,
  dataDir: string,
  staging: string,
  log: (line: string) => void,
): Promise<Copied> {
  if (settings.appendonly !== "yes") return copyFreshRdb(options, settings, dataDir, staging, log);
  const aof = await withRewritesPaused(options.redis, settings.rewritePercentage, log, () =>
    copyAofConsistently(options, settings, dataDir, staging, log),
  );
  const notes = [
    `copied ${settings.appenddirname}/ (manifest and the files it names) from ${dataDir}, with automatic ` +
      `AOF rewrites paused during the copy (auto-aof-rewrite-percentage ${settings.rewritePercentage} -> 0 -> ${settings.rewritePercentage})`,
  ];
  if (aof.trimmedBytes > 0) {
    notes.push(
      `the last ${aof.trimmedBytes} bytes of the incremental AOF (a command being written) were left out`,
    );
  }
  const rdb = await copyRdbIfPresent(settings, dataDir, staging);
  notes.push(
    rdb
      ? `copied ${settings.dbfilename} too (with appendonly yes Redis does not load it at start: the AOF is what restores)`
      : `no ${settings.dbfilename} in ${dataDir} (RDB snapshots off?)`,
  );
  return { aof, rdb, notes };
}

/**
 * Sets auto-aof-rewrite-percentage to 0 for the duration of `work`, then back to `original`, whether
 * `work` succeeded or not. A failure to set it back is an error that says how to do it by hand.
 */
export async function withRewritesPaused<T>(
  redis: Redis,
  original: string,
  log: (line: string) => void,
  work: () => Promise<T>,
): Promise<T> {
  await redis.config("SET", "auto-aof-rewrite-percentage", "0");
  log(`automatic AOF rewrites paused (auto-aof-rewrite-percentage ${original} -> 0)`);
  let outcome: { ok: true; value: T } | { ok: false; error: unknown };
  try {
    outcome = { ok: true, value: await work() };
  } catch (error) {
    outcome = { ok: false, error };
  }
  const restoreError = await redis.config("SET", "auto-aof-rewrite-percentage", original).then(
    () => undefined,
    (err: Error) => err,
  );
  if (restoreError) {
    const before = outcome.ok ? "the copy was made, but " : `${(outcome.error as Error).message}; and `;
    throw new Error(
      `${before}auto-aof-rewrite-percentage could not be set back to ${original} (${restoreError.message}): ` +
        `run CONFIG SET auto-aof-rewrite-percentage ${original} on that Redis`,
    );
  }
  log(`automatic AOF rewrites resumed (auto-aof-rewrite-percentage ${original})`);
  if (!outcome.ok) throw outcome.error;
  return outcome.value;
}

/** Waits until no AOF rewrite and no RDB snapshot runs or is scheduled. */
async function waitQuiet(options: BackupOptions, log: (line: string) => void): Promise<void> {
  const quiet = (i: Map<string, string>) =>
    i.get("aof_rewrite_in_progress") !== "1" &&
    i.get("aof_rewrite_scheduled") !== "1" &&
    i.get("rdb_bgsave_in_progress") !== "1";
  if (quiet(await readInfo(options.redis))) return;
  log("waiting for the AOF rewrite or RDB snapshot in progress to end");
  await waitForInfo(
    options.redis,
    (i) => {
      options.signal?.throwIfAborted();
      return quiet(i);
    },
    "waiting for a running AOF rewrite or RDB snapshot to end",
    options.waitTimeoutMs ?? 600_000,
  );
}

interface AofGeneration {
  /** aof_rewrites: counts every rewrite started. */
  rewrites: string | undefined;
  running: boolean;
  manifest: string;
}

/** A rewrite changes the manifest and counts in aof_rewrites: equal before and after means none ran. */
async function aofGeneration(redis: Redis, manifestPath: string): Promise<AofGeneration> {
  const info = await readInfo(redis);
  const manifest = await readFile(manifestPath, "utf8");
  return {
    rewrites: info.get("aof_rewrites"),
    running: info.get("aof_rewrite_in_progress") === "1",
    manifest,
  };
}

const sameGeneration = (a: AofGeneration, b: AofGeneration) =>
  a.rewrites === b.rewrites && a.manifest === b.manifest && !a.running && !b.running;

async function copyAofConsistently(
  options: BackupOptions,
  settings: Settings,
  dataDir: string,
  staging: string,
  log: (line: string) => void,
): Promise<NonNullable<BackupManifest["aof"]>> {
  const aofDir = path.join(dataDir, settings.appenddirname);
  const manifestName = `${settings.appendfilename}.manifest`;
  const target = path.join(staging, settings.appenddirname);
  for (let attempt = 1; attempt <= COPY_ATTEMPTS; attempt++) {
    await waitQuiet(options, log);
    const before = await aofGeneration(options.redis, path.join(aofDir, manifestName));
    await rm(target, { recursive: true, force: true });
    await mkdir(target);
    const trimmedBytes = await copyAofFiles(aofDir, target, manifestName, before.manifest, options.signal);
    const after = await aofGeneration(options.redis, path.join(aofDir, manifestName));
    if (sameGeneration(before, after)) {
      return {
        dir: settings.appenddirname,
        manifest: `${settings.appenddirname}/${manifestName}`,
        trimmedBytes,
      };
    }
    log(`an AOF rewrite started during the copy (attempt ${attempt}): copying again`);
  }
  throw new Error(
    `AOF rewrites kept starting during the copy (${COPY_ATTEMPTS} attempts): is something running BGREWRITEAOF in a loop?`,
  );
}

/** Copies the manifest and the base and incremental files it names; returns the bytes trimmed. */
async function copyAofFiles(
  aofDir: string,
  target: string,
  manifestName: string,
  manifestText: string,
  signal: AbortSignal | undefined,
): Promise<number> {
  await writeFile(path.join(target, manifestName), manifestText);
  let trimmed = 0;
  for (const entry of filesToLoad(parseManifest(manifestText))) {
    signal?.throwIfAborted();
    const from = path.join(aofDir, entry.file);
    const to = path.join(target, entry.file);
    if (entry.type === "b") {
      await copyFile(from, to, { onChunk: () => signal?.throwIfAborted() });
      continue;
    }
    trimmed += await copyIncrementalAof(from, to, signal);
  }
  return trimmed;
}

/** Copies an incremental AOF up to its last complete command; returns how many bytes were left out. */
async function copyIncrementalAof(
  from: string,
  to: string,
  signal: AbortSignal | undefined,
): Promise<number> {
  const scanner = new AofScanner();
  await copyFile(from, to, {
    onChunk: (chunk) => {
      signal?.throwIfAborted();
      scanner.push(chunk);
    },
  });
  const scan = scanner.result();
  if (scan.malformed) {
    throw new Error(
      `the live AOF file ${from} is damaged at byte ${scan.malformed.at} (${scan.malformed.reason}), not ` +
        "just cut short: check it with redis-check-aof; no backup was written",
    );
  }
  if (scan.completeLength < scan.totalLength) await truncate(to, scan.completeLength);
  return scan.totalLength - scan.completeLength;
}

async function copyRdbIfPresent(
  settings: Settings,
  dataDir: string,
  staging: string,
): Promise<string | null> {
  const from = path.join(dataDir, settings.dbfilename);
  try {
    await copyFile(from, path.join(staging, "dump.rdb"));
    return "dump.rdb";
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

/** appendonly no: the RDB file is all there is, so take a fresh one (BGSAVE) and copy it. */
async function copyFreshRdb(
  options: BackupOptions,
  settings: Settings,
  dataDir: string,
  staging: string,
  log: (line: string) => void,
): Promise<Copied> {
  await waitQuiet(options, log);
  const savesBefore = (await readInfo(options.redis)).get("rdb_last_save_time");
  const startedAt = Date.now();
  // A snapshot that started since waitQuiet will do: it is as fresh as ours would be.
  await options.redis.bgsave().catch((err: Error) => {
    if (!/already in progress/i.test(err.message)) throw err;
  });
  log("appendonly is no: taking a fresh RDB snapshot (BGSAVE)");
  const info = await waitForInfo(
    options.redis,
    (i) => i.get("rdb_bgsave_in_progress") === "0" && i.get("rdb_last_save_time") !== savesBefore,
    "waiting for BGSAVE",
    options.waitTimeoutMs ?? 600_000,
  ).catch(async (err) => {
    const status = (await readInfo(options.redis)).get("rdb_last_bgsave_status");
    throw status === "err" ? new Error("BGSAVE failed on the Redis server: see its log") : err;
  });
  if (info.get("rdb_last_bgsave_status") !== "ok")
    throw new Error("BGSAVE failed on the Redis server: see its log");
  const from = path.join(dataDir, settings.dbfilename);
  const { mtimeMs } = await stat(from);
  // A file not written by the snapshot just taken belongs to another Redis (the same path on this machine).
  if (mtimeMs < startedAt - 60_000) {
    throw new Error(
      `${from} was not written by the snapshot just taken: is ${dataDir} this Redis's data directory? ` +
        "give --redis-data-dir, or --stream-rdb",
    );
  }
  await copyFile(from, path.join(staging, "dump.rdb"));
  const notes = [
    `appendonly is no: took a fresh RDB snapshot and copied ${settings.dbfilename} from ${dataDir}; without ` +
      "the AOF, a crash loses every write since the last snapshot (see oculus doctor)",
  ];
  return { aof: null, rdb: "dump.rdb", notes };
}

// ------------------------------------------------------------------ snapshot over the connection

async function streamSnapshot(
  options: BackupOptions,
  staging: string,
  reason: string,
  log: (line: string) => void,
): Promise<Copied> {
  log(`taking an RDB snapshot over the connection (as redis-cli --rdb does): ${reason}`);
  const result = await streamRdbSnapshot(options.redisUrl, path.join(staging, "dump.rdb"));
  const notes = [
    `RDB snapshot streamed over the connection (${result.bytes} bytes, ${result.transfer} transfer), ` +
      `not a copy of the data directory: ${reason}`,
    "it holds no AOF: to restore it into a Redis with appendonly yes, start that Redis with appendonly " +
      "no on it, then CONFIG SET appendonly yes (see docs/operations.md)",
  ];
  return { aof: null, rdb: "dump.rdb", notes };
}

// ------------------------------------------------------------------ PostgreSQL and retention

async function dumpPostgres(
  pg: NonNullable<BackupOptions["postgres"]>,
  staging: string,
  log: (line: string) => void,
): Promise<NonNullable<BackupManifest["postgres"]>> {
  const file = `postgres-${pg.schema}.dump`;
  const bytes = await dumpPostgresSchema(pg.databaseUrl, pg.schema, path.join(staging, file));
  log(`pg_dump of schema ${pg.schema}: ${file} (${bytes} bytes, custom format: restore with pg_restore)`);
  return { file, schema: pg.schema };
}

/** Every file under `dir`, relative, with forward slashes (SHA256SUMS and backup.json excluded). */
async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...(await listFiles(dir, rel)));
    else if (rel !== CHECKSUMS_FILE && rel !== BACKUP_JSON) out.push(rel);
  }
  return out.sort();
}

/** Deletes backup directories in `dest` older than `days` (by the time in their name), except `keep`. */
export async function applyRetention(dest: string, days: number, now: Date, keep: string): Promise<string[]> {
  const cutoff = now.getTime() - days * 86_400_000;
  const removed: string[] = [];
  for (const entry of await readdir(dest, { withFileTypes: true })) {
    const date = backupDirDate(entry.name);
    if (!entry.isDirectory() || !date || entry.name === keep || date.getTime() >= cutoff) continue;
    await rm(path.join(dest, entry.name), { recursive: true, force: true });
    removed.push(entry.name);
  }
  return removed.sort();
}
