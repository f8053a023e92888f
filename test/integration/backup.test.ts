/**
 * `oculus backup` and `oculus backup verify` against real redis-server processes and PostgreSQL:
 * a backup taken while a BGREWRITEAOF runs waits for it, is consistent and loads; the rewrite setting
 * is set back even when the backup is abandoned; retention; the snapshot over the connection; a
 * backup of a replica (files and snapshot); verify
 * on good and damaged backups; pg_dump; and the documented restore procedure (copy the backup into a
 * fresh data directory, start Redis, `oculus reconcile`), after which the index equals PostgreSQL.
 */
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BackupResult, type BuildQueue, backupRedis, verifyBackup } from "../../src/index.js";
import { backupDirName, writeChecksums } from "../../src/ops/backup-files.js";
import { indexDiff } from "../helpers/index-state.js";
import { oculus } from "../helpers/oculus-cli.js";
import { sql, TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const exec = promisify(execFile);
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

function tempDir(label: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), `oculus-${label}-`));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface Fixture {
  server: RedisServer;
  admin: Redis;
  queue: BuildQueue;
  schema: string;
  prefix: string;
}

async function fixture(label: string, builds: number): Promise<Fixture> {
  // RDB snapshots on too, so that backups carry a dump.rdb.
  // No 5 s wait for more replicas before a snapshot streamed over the connection (--stream-rdb).
  const server = await RedisServer.start({
    extraArgs: ["--save", "3600 1", "--repl-diskless-sync-delay", "0"],
  });
  cleanups.push(() => server.destroy());
  const admin = server.client();
  cleanups.push(async () => admin.disconnect());
  const opened = await openTestQueue(label, { redisUrl: server.url });
  cleanups.push(opened.cleanup);
  for (let i = 0; i < builds; i += 100) {
    await opened.queue.submitMany(
      Array.from({ length: 100 }, (_, j) => ({ strategyId: label, priority: (i + j) % 3 })),
    );
  }
  await admin.bgsave();
  await eventually(async () => /rdb_bgsave_in_progress:0/.test(await admin.info("persistence")));
  return { server, admin, ...opened };
}

/** Makes the next AOF rewrite take about `ms` (filler keys, each delayed 1 ms while saved) and starts it. */
async function startSlowRewrite(admin: Redis, ms: number): Promise<void> {
  const pipeline = admin.pipeline();
  for (let i = 0; i < ms; i++) pipeline.set(`filler:${i}`, "x");
  await pipeline.exec();
  await admin.config("SET", "rdb-key-save-delay", "1000");
  await admin.bgrewriteaof();
  await eventually(async () => /aof_rewrite_in_progress:1/.test(await admin.info("persistence")));
}

async function queuedCount(schema: string): Promise<number> {
  const [row] = await sql<{ n: number }>(
    schema,
    "SELECT count(*)::int AS n FROM builds WHERE status = 'queued'",
  );
  return row?.n ?? -1;
}

const rewritePercentage = async (admin: Redis) =>
  ((await admin.config("GET", "auto-aof-rewrite-percentage")) as string[])[1];

describe("oculus backup", () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await fixture("backup_rewrite", 300);
  });

  it("waits for a running BGREWRITEAOF, copies a consistent AOF, and sets the rewrite setting back", async () => {
    await f.admin.config("SET", "auto-aof-rewrite-percentage", "77");
    await startSlowRewrite(f.admin, 1500);
    // Submits go on during the backup: the copy must still be whole.
    let submitting = true;
    const submits = (async () => {
      while (submitting)
        await f.queue.submitMany(Array.from({ length: 10 }, () => ({ strategyId: "during" })));
    })();
    const lines: string[] = [];
    let result: BackupResult;
    try {
      result = await backupRedis({
        redis: f.admin,
        redisUrl: f.server.url,
        dest: tempDir("dest"),
        log: (l) => lines.push(l),
      });
    } finally {
      submitting = false;
      await submits;
      await f.admin.config("SET", "rdb-key-save-delay", "0");
    }

    expect(lines.join("\n")).toMatch(/waiting for the AOF rewrite or RDB snapshot in progress to end/);
    expect(await rewritePercentage(f.admin)).toBe("77");
    expect(result.method).toBe("files");
    // The copy is of the generation the rewrite made (base 2), not a mix.
    const manifest = readFileSync(path.join(result.dir, "appendonlydir/appendonly.aof.manifest"), "utf8");
    expect(manifest).toMatch(/appendonly\.aof\.2\.base\.rdb seq 2 type b/);
    expect(readdirSync(result.dir).sort()).toEqual([
      "SHA256SUMS",
      "appendonlydir",
      "backup.json",
      "dump.rdb",
    ]);
    // SHA256SUMS is in sha256sum's own format.
    const { stdout } = await exec("sha256sum", ["-c", "SHA256SUMS"], { cwd: result.dir });
    expect(stdout).toMatch(/appendonlydir\/appendonly\.aof\.manifest: OK/);

    const report = await verifyBackup({
      dir: result.dir,
      prefix: f.prefix,
      postgres: { databaseUrl: TEST_DATABASE_URL, schema: f.schema },
    });
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.fileCheck).toMatchObject({ tool: "redis-check-aof", ok: true });
    expect(report.load).toMatchObject({ ok: true, from: "aof", indexMarker: true });
    expect(report.load.queueLength).toBeGreaterThanOrEqual(300);
    // Builds submitted after the copy are in PostgreSQL only; nothing in the backup is unknown there.
    const queued = await queuedCount(f.schema);
    expect(report.postgres).toEqual({
      queued,
      inBackupNotQueued: 0,
      queuedNotInBackup: queued - report.load.queueLength - report.load.delayedLength,
    });
  });

  it("sets the rewrite setting back when the backup is abandoned while it waits", async () => {
    await f.admin.config("SET", "auto-aof-rewrite-percentage", "55");
    await startSlowRewrite(f.admin, 1500);
    const dest = tempDir("abandoned");
    const abort = new AbortController();
    setTimeout(() => abort.abort(new Error("test abandoned the backup")), 300);
    try {
      await expect(
        backupRedis({ redis: f.admin, redisUrl: f.server.url, dest, signal: abort.signal }),
      ).rejects.toThrow(/test abandoned the backup/);
    } finally {
      await f.admin.config("SET", "rdb-key-save-delay", "0");
    }
    expect(await rewritePercentage(f.admin)).toBe("55");
    expect(readdirSync(dest)).toEqual([]);
  });

  it("--stream-rdb takes the snapshot over the connection and says so; retention deletes old backups only", async () => {
    const dest = tempDir("stream");
    const yesterday = backupDirName(new Date(Date.now() - 86_400_000));
    for (const name of ["redis-20200101T000000Z", yesterday, "notes"]) mkdirSync(path.join(dest, name));
    const env = { REDIS_URL: f.server.url, OCULUS_PREFIX: f.prefix };
    const res = await oculus(["backup", "--dest", dest, "--stream-rdb", "--retention-days", "7"], env);
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/method: RDB snapshot over the connection/);
    expect(res.stdout).toMatch(/removed by retention: redis-20200101T000000Z\n/);
    const made = readdirSync(dest).filter((n) => n.startsWith("redis-") && n !== yesterday);
    expect(made).toHaveLength(1);
    expect(readdirSync(dest).sort()).toEqual([made[0], yesterday, "notes"].sort());

    const verified = await oculus(["backup", "verify", path.join(dest, made[0] as string), "--json"], {
      ...env,
      DATABASE_URL: TEST_DATABASE_URL,
      OCULUS_SCHEMA: f.schema,
    });
    expect(verified.code).toBe(0);
    const report = JSON.parse(verified.stdout);
    expect(report).toMatchObject({ ok: true, fileCheck: { tool: "redis-check-rdb", ok: true } });
    expect(report.load).toMatchObject({ ok: true, from: "rdb" });
    // Ready plus delayed (a build re-indexed with a remaining backoff waits in the delayed set).
    expect(report.load.queueLength + report.load.delayedLength).toBe(await queuedCount(f.schema));
  });

  it("streams the snapshot over the connection by itself when the data directory is not readable here", async () => {
    // A Redis whose data directory is gone from this machine's view (as for a remote one).
    const remote = await RedisServer.start({ extraArgs: ["--repl-diskless-sync-delay", "0"] });
    cleanups.push(() => remote.destroy());
    const client = remote.client();
    cleanups.push(async () => client.disconnect());
    await client.zadd("oculus:build_queue", 1, "a", 2, "b");
    rmSync(remote.dir, { recursive: true, force: true });
    const lines: string[] = [];
    const result = await backupRedis({
      redis: client,
      redisUrl: remote.url,
      dest: tempDir("remote"),
      log: (l) => lines.push(l),
    });
    expect(result.method).toBe("rdb-stream");
    expect(lines.join("\n")).toMatch(
      /taking an RDB snapshot over the connection \(as redis-cli --rdb does\)/,
    );
    const report = await verifyBackup({ dir: result.dir, prefix: "oculus" });
    expect(report).toMatchObject({ ok: true, load: { from: "rdb", queueLength: 2 } });
  });

  it("backs up a replica as well (the Sentinel profile's `backup` of a demoted master): files and --stream-rdb", async () => {
    const replica = await RedisServer.start({
      extraArgs: ["--replicaof", "127.0.0.1", String(f.server.port), "--repl-diskless-sync-delay", "0"],
    });
    cleanups.push(() => replica.destroy());
    const client = replica.client();
    cleanups.push(async () => client.disconnect());
    const key = `${f.prefix}:build_queue`;
    await eventually(async () => {
      const info = await client.info("replication");
      return /master_link_status:up/.test(info) && (await client.zcard(key)) === (await f.admin.zcard(key));
    }, 30_000);
    await expect(client.set("refused?", "1")).rejects.toThrow(/^READONLY/);
    const queued = await queuedCount(f.schema);
    const env = { REDIS_URL: replica.url, OCULUS_PREFIX: f.prefix };
    for (const extra of [[], ["--stream-rdb"]]) {
      const dest = tempDir("replica");
      const res = await oculus(["backup", "--dest", dest, "--json", ...extra], env);
      expect(res.code).toBe(0);
      const result = JSON.parse(res.stdout) as BackupResult;
      expect(result.method).toBe(extra.length ? "rdb-stream" : "files");
      const report = await verifyBackup({ dir: result.dir, prefix: f.prefix });
      expect(report.problems).toEqual([]);
      expect(report.load).toMatchObject({ ok: true, indexMarker: true });
      expect(report.load.queueLength + report.load.delayedLength).toBe(queued);
    }
    // The replica's rewrite setting is set back too.
    expect(await rewritePercentage(client)).toBe("100");
  });

  it("--pg-dump adds a pg_dump of the queue's schema", async () => {
    const result = await backupRedis({
      redis: f.admin,
      redisUrl: f.server.url,
      dest: tempDir("pgdump"),
      postgres: { databaseUrl: TEST_DATABASE_URL, schema: f.schema },
    });
    const file = `postgres-${f.schema}.dump`;
    expect(result.files.map((x) => x.path)).toContain(file);
    const { stdout } = await exec("pg_restore", ["--list", path.join(result.dir, file)]);
    expect(stdout).toMatch(new RegExp(`TABLE ${f.schema} builds `));
  });
});

describe("oculus backup verify", () => {
  it("passes a good backup, and fails a damaged one (checksum, redis-check-aof, load), never leaving a server", async () => {
    const f = await fixture("verify_damaged", 100);
    const good = await backupRedis({ redis: f.admin, redisUrl: f.server.url, dest: tempDir("good") });
    const env = { OCULUS_PREFIX: f.prefix };
    const ok = await oculus(["backup", "verify", good.dir], env);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/build queue \(.*:build_queue\): 100 ready/);
    expect(ok.stdout).toMatch(/backup OK/);

    // One byte of the incremental AOF changed: a '*' that starts a command.
    const damaged = path.join(tempDir("damaged"), "b");
    await cp(good.dir, damaged, { recursive: true });
    const incr = path.join(damaged, "appendonlydir/appendonly.aof.1.incr.aof");
    const bytes = readFileSync(incr);
    bytes[bytes.indexOf("\r\n*", 100) + 2] = "?".charCodeAt(0);
    writeFileSync(incr, bytes);
    const bad = await oculus(["backup", "verify", damaged], env);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(
      /files changed since the backup \(checksum\): appendonlydir\/appendonly\.aof\.1\.incr\.aof/,
    );
    expect(bad.stdout).toMatch(/redis-check-aof rejects the backup/);
    expect(bad.stdout).toMatch(/does not load: .*Bad file format reading the append only file/);

    // The same damage with checksums made afterwards: the check and the load still catch it.
    await rm(path.join(damaged, "SHA256SUMS"));
    await writeChecksums(damaged, [
      "appendonlydir/appendonly.aof.1.base.rdb",
      "appendonlydir/appendonly.aof.1.incr.aof",
    ]);
    const report = await verifyBackup({ dir: damaged, prefix: f.prefix });
    expect(report.ok).toBe(false);
    expect(report.checksums.mismatched).toEqual([]);
    expect(report.problems.join("\n")).toMatch(/redis-check-aof rejects/);
    expect(report.load.ok).toBe(false);

    const { stdout } = await exec("ps", ["-eo", "args"]);
    expect(stdout).not.toMatch(/oculus-verify-/);
  });
});

describe("the restore procedure (docs/operations.md)", () => {
  it("stop Redis, copy the backup into the data directory, start, oculus reconcile: the index equals PostgreSQL", async () => {
    const f = await fixture("restore", 100);
    const backup = await backupRedis({ redis: f.admin, redisUrl: f.server.url, dest: tempDir("restore") });
    // Life goes on after the backup: 30 builds run, 20 more arrive.
    const claimed = await f.queue.claim("restore-worker", 30);
    for (const b of claimed) await f.queue.complete(b.id, b.lease);
    await f.queue.submitMany(Array.from({ length: 20 }, () => ({ strategyId: "after-backup" })));
    await f.queue.close();

    // A new Redis machine: an empty data directory.
    const target = await RedisServer.start();
    cleanups.push(() => target.destroy());
    await target.stop();
    await rm(path.join(target.dir, "appendonlydir"), { recursive: true, force: true });
    await cp(path.join(backup.dir, "appendonlydir"), path.join(target.dir, "appendonlydir"), {
      recursive: true,
    });
    await cp(path.join(backup.dir, "dump.rdb"), path.join(target.dir, "dump.rdb"));
    await target.restart();
    const client = target.client();
    cleanups.push(async () => client.disconnect());
    expect(await client.zcard(`${f.prefix}:build_queue`)).toBe(100);
    expect((await indexDiff(client, f.prefix, f.schema)).length).toBe(50);

    const env = {
      REDIS_URL: target.url,
      DATABASE_URL: TEST_DATABASE_URL,
      OCULUS_SCHEMA: f.schema,
      OCULUS_PREFIX: f.prefix,
    };
    const res = await oculus(["reconcile", "--json"], env);
    expect(res.code).toBe(0);
    expect(await indexDiff(client, f.prefix, f.schema)).toEqual([]);
    expect(await client.zcard(`${f.prefix}:build_queue`)).toBe(90);
  });
});
