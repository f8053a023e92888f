/**
 * The restore test of a backup (`oculus backup verify DIR`): are the files the ones that were written
 * (SHA256SUMS), does redis-check-aof (or redis-check-rdb) accept them, and does a real redis-server
 * load them: a scratch server on a free port, on a copy of the backup, killed at the end whatever
 * happens. Reports what the backup holds (keys, the build queue's length) and, given PostgreSQL, how
 * that differs from the builds queued there now (expected for an older backup: reported, not failed).
 */
import { cp, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { poolKeys, redisKeys } from "../redis/keys.js";
import type { BackupManifest } from "./backup.js";
import { BACKUP_JSON, CHECKSUMS_FILE, readChecksums, sha256File } from "./backup-files.js";
import { parseInfo } from "./redis-admin.js";
import { ScratchRedis } from "./scratch-redis.js";
import { lastLines, runTool, ToolMissingError } from "./tools.js";

export interface VerifyOptions {
  dir: string;
  /** Redis key prefix of the queue (for the build queue's length). */
  prefix: string;
  /** Compare with the builds queued in this PostgreSQL schema now. */
  postgres?: { databaseUrl: string; schema: string };
  /** How long the scratch server may take to load. Default 10 minutes. */
  loadTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface VerifyReport {
  /** False when the backup is damaged or does not load. */
  ok: boolean;
  dir: string;
  /** Why it is not ok (empty when ok). */
  problems: string[];
  notes: string[];
  checksums: { checked: number; mismatched: string[]; missing: string[]; unlisted: string[] };
  fileCheck: { tool: string; ok: boolean; summary: string } | null;
  load: {
    ok: boolean;
    from: "aof" | "rdb" | null;
    keys: number;
    queueLength: number;
    delayedLength: number;
    indexMarker: boolean;
    error: string | null;
  };
  postgres: { queued: number; inBackupNotQueued: number; queuedNotInBackup: number } | null;
}

/** Where the AOF and the RDB file are in a backup directory. */
interface Layout {
  aofDir: string | null;
  manifest: string | null;
  rdb: string | null;
}

export async function verifyBackup(options: VerifyOptions): Promise<VerifyReport> {
  const log = options.log ?? (() => undefined);
  const report = emptyReport(options.dir);
  const layout = await findLayout(options.dir);
  await checkSums(options.dir, report);
  if (!layout.manifest && !layout.rdb) {
    report.problems.push(`no AOF manifest and no dump.rdb in ${options.dir}: nothing to restore`);
    return finish(report);
  }
  report.fileCheck = await checkFiles(options.dir, layout);
  if (report.fileCheck && !report.fileCheck.ok) {
    report.problems.push(`${report.fileCheck.tool} rejects the backup: ${report.fileCheck.summary}`);
  }
  const ids = await loadInScratch(options, layout, report, log);
  if (ids && options.postgres) report.postgres = await compareWithPostgres(options.postgres, ids);
  return finish(report);
}

function emptyReport(dir: string): VerifyReport {
  return {
    ok: false,
    dir,
    problems: [],
    notes: [],
    checksums: { checked: 0, mismatched: [], missing: [], unlisted: [] },
    fileCheck: null,
    load: {
      ok: false,
      from: null,
      keys: 0,
      queueLength: 0,
      delayedLength: 0,
      indexMarker: false,
      error: null,
    },
    postgres: null,
  };
}

function finish(report: VerifyReport): VerifyReport {
  report.ok = report.problems.length === 0;
  return report;
}

/** From backup.json when there is one, else by looking: a directory holding a *.manifest, a dump.rdb. */
async function findLayout(dir: string): Promise<Layout> {
  const json = await readFile(path.join(dir, BACKUP_JSON), "utf8").then(
    (text) => JSON.parse(text) as Partial<Pick<BackupManifest, "aof" | "rdb">>,
    () => undefined,
  );
  if (json)
    return { aofDir: json.aof?.dir ?? null, manifest: json.aof?.manifest ?? null, rdb: json.rdb ?? null };
  const entries = await readdir(dir, { withFileTypes: true });
  const layout: Layout = { aofDir: null, manifest: null, rdb: null };
  for (const entry of entries) {
    if (entry.isFile() && entry.name === "dump.rdb") layout.rdb = "dump.rdb";
    if (!entry.isDirectory()) continue;
    const manifest = (await readdir(path.join(dir, entry.name))).find((f) => f.endsWith(".manifest"));
    if (manifest) {
      layout.aofDir = entry.name;
      layout.manifest = `${entry.name}/${manifest}`;
    }
  }
  return layout;
}

async function checkSums(dir: string, report: VerifyReport): Promise<void> {
  let listed: { path: string; sha256: string }[];
  try {
    listed = await readChecksums(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    report.problems.push(
      code === "ENOENT"
        ? `no ${CHECKSUMS_FILE} in ${dir}: not a backup made by oculus backup, or an incomplete one`
        : (err as Error).message,
    );
    return;
  }
  for (const entry of listed) {
    const actual = await sha256File(path.join(dir, entry.path)).catch(() => undefined);
    if (actual === undefined) report.checksums.missing.push(entry.path);
    else if (actual !== entry.sha256) report.checksums.mismatched.push(entry.path);
    report.checksums.checked += 1;
  }
  const known = new Set([...listed.map((e) => e.path), CHECKSUMS_FILE, BACKUP_JSON]);
  report.checksums.unlisted = (await allFiles(dir)).filter((f) => !known.has(f));
  const { missing, mismatched, unlisted } = report.checksums;
  if (missing.length > 0) report.problems.push(`missing files: ${missing.join(", ")}`);
  if (mismatched.length > 0)
    report.problems.push(`files changed since the backup (checksum): ${mismatched.join(", ")}`);
  if (unlisted.length > 0)
    report.notes.push(`files not in ${CHECKSUMS_FILE} (ignored): ${unlisted.join(", ")}`);
}

async function allFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...(await allFiles(dir, rel)));
    else out.push(rel);
  }
  return out;
}

/** redis-check-aof on the manifest (Redis 7 checks every file it names), else redis-check-rdb. */
async function checkFiles(dir: string, layout: Layout): Promise<VerifyReport["fileCheck"]> {
  const [tool, file] = layout.manifest
    ? ["redis-check-aof", path.join(dir, layout.manifest)]
    : ["redis-check-rdb", path.join(dir, layout.rdb ?? "dump.rdb")];
  try {
    const run = await runTool(tool, [file]);
    const output = `${run.stdout}\n${run.stderr}`;
    return { tool, ok: run.code === 0, summary: lastLines(output, run.code === 0 ? 1 : 3) };
  } catch (err) {
    if (err instanceof ToolMissingError) {
      return { tool, ok: true, summary: `not run: ${tool} is not installed (the load test still ran)` };
    }
    throw err;
  }
}

/** Loads a copy of the backup in a scratch redis-server; returns the queued ids it holds (undefined: not loaded). */
async function loadInScratch(
  options: VerifyOptions,
  layout: Layout,
  report: VerifyReport,
  log: (line: string) => void,
): Promise<Set<string> | undefined> {
  const scratchDir = await mkdtemp(path.join(tmpdir(), "oculus-verify-"));
  let server: ScratchRedis | undefined;
  try {
    const args = await prepareCopy(options.dir, layout, scratchDir);
    report.load.from = layout.manifest ? "aof" : "rdb";
    log(`loading a copy in a scratch redis-server (${report.load.from})`);
    server = await ScratchRedis.start({ dir: scratchDir, args, timeoutMs: options.loadTimeoutMs ?? 600_000 });
    return await readContents(server, options.prefix, report);
  } catch (err) {
    report.load.error = (err as Error).message;
    report.problems.push(`the backup does not load: ${report.load.error}`);
    return undefined;
  } finally {
    await server?.kill();
    await rm(scratchDir, { recursive: true, force: true });
  }
}

/** Copies the backup's data files into `scratchDir`; returns the redis-server arguments to load them. */
async function prepareCopy(dir: string, layout: Layout, scratchDir: string): Promise<string[]> {
  if (layout.rdb) await cp(path.join(dir, layout.rdb), path.join(scratchDir, "dump.rdb"));
  if (!layout.manifest || !layout.aofDir) return ["--appendonly", "no", "--dbfilename", "dump.rdb"];
  await cp(path.join(dir, layout.aofDir), path.join(scratchDir, layout.aofDir), { recursive: true });
  const appendfilename = path.basename(layout.manifest).replace(/\.manifest$/, "");
  return [
    ...["--appendonly", "yes", "--appenddirname", layout.aofDir, "--appendfilename", appendfilename],
    // Nothing forgiven: a backup whose AOF is cut short must not pass as good.
    ...["--aof-load-truncated", "no", "--dbfilename", "dump.rdb"],
  ];
}

async function readContents(
  server: ScratchRedis,
  prefix: string,
  report: VerifyReport,
): Promise<Set<string>> {
  const client = server.client();
  try {
    await client.connect();
    const keys = redisKeys(prefix);
    const keyspace = parseInfo(await client.info("keyspace"));
    report.load.keys = [...keyspace.values()].reduce(
      (sum, v) => sum + Number(/keys=(\d+)/.exec(v)?.[1] ?? 0),
      0,
    );
    // Every pool's sets (routing): the default pool's plus those of the pools in the registry.
    const pools = ["default", ...(await client.hkeys(keys.pools)).filter((p) => p !== "default")];
    const sets = await Promise.all(
      pools.map(async (pool) => {
        const k = poolKeys(keys, pool);
        return Promise.all([client.zrange(k.queue, 0, -1), client.zrange(k.delayed, 0, -1)]);
      }),
    );
    const ready = sets.flatMap(([r]) => r);
    const delayed = sets.flatMap(([, d]) => d);
    const marker = await client.exists(keys.indexMarker);
    report.load = { ...report.load, ok: true, queueLength: ready.length, delayedLength: delayed.length };
    report.load.indexMarker = marker === 1;
    return new Set([...ready, ...delayed]);
  } finally {
    client.disconnect();
  }
}

async function compareWithPostgres(
  target: NonNullable<VerifyOptions["postgres"]>,
  inBackup: Set<string>,
): Promise<NonNullable<VerifyReport["postgres"]>> {
  const client = new pg.Client({ connectionString: target.databaseUrl, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    const rows = (
      await client.query<{ id: string }>(
        `SELECT id::text AS id FROM "${target.schema}".builds WHERE status = 'queued'`,
      )
    ).rows;
    const queued = new Set(rows.map((r) => r.id));
    return {
      queued: queued.size,
      inBackupNotQueued: [...inBackup].filter((id) => !queued.has(id)).length,
      queuedNotInBackup: [...queued].filter((id) => !inBackup.has(id)).length,
    };
  } finally {
    await client.end();
  }
}
