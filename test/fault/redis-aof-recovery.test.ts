/**
 * Redis restarts on damaged or missing persistence, with the real BuildQueue connected:
 *   - a truncated AOF tail (aof-load-truncated yes): Redis starts without the cut writes; the queue's
 *     reconcile puts the lost builds back; `oculus doctor` tells the operator what Redis did at start;
 *   - a corrupt AOF: Redis refuses to start; the queue runs on PostgreSQL meanwhile; after
 *     `redis-check-aof --fix` and a restart it reconciles;
 *   - an empty Redis (its data directory lost): the queue rebuilds the index and logs a warning.
 * Each ends with the index equal to the queued builds in PostgreSQL.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type BuildQueue, checkPersistence, type ReconcileReport } from "../../src/index.js";
import { privateServerArgs } from "../../src/ops/scratch-redis.js";
import { runTool } from "../../src/ops/tools.js";
import { indexDiff } from "../helpers/index-state.js";
import { oculus } from "../helpers/oculus-cli.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { capturingLogger } from "../helpers/redis-conf.js";
import { RedisServer } from "../helpers/redis-server.js";

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

async function setup(label: string, builds: number) {
  const server = await RedisServer.start({ appendfsync: "everysec" });
  cleanups.push(() => server.destroy());
  const { logger, lines } = capturingLogger();
  const opened = await openTestQueue(label, { redisUrl: server.url, logger });
  cleanups.push(opened.cleanup);
  const reports: ReconcileReport[] = [];
  opened.queue.on("reconciled", (r: ReconcileReport) => reports.push(r));
  for (let i = 0; i < builds; i += 50) {
    await opened.queue.submitMany(
      Array.from({ length: 50 }, (_, j) => ({ strategyId: label, priority: (i + j) % 4 })),
    );
  }
  const client = server.client();
  cleanups.push(async () => client.disconnect());
  return { ...opened, server, client, lines, reports };
}

const incrFile = (server: RedisServer) => path.join(server.dir, "appendonlydir", "appendonly.aof.1.incr.aof");

/** The offset of the start of a command (its '*') after `fraction` of the file. */
function commandStartAfter(bytes: Buffer, fraction: number): number {
  return bytes.indexOf("\r\n*", Math.floor(bytes.length * fraction)) + 2;
}

async function killRedis(server: RedisServer, queue: BuildQueue): Promise<void> {
  await server.kill9();
  await eventually(async () => queue.mode === "postgres");
}

const redisLog = (server: RedisServer) => readFileSync(path.join(server.dir, "redis.log"), "utf8");

describe("Redis restarts on damaged or lost persistence", () => {
  it("a truncated AOF tail: Redis loads the rest, the queue puts the lost builds back, doctor says so", async () => {
    const { server, queue, schema, prefix, client, lines, reports } = await setup("aof_truncated", 400);
    await killRedis(server, queue);
    // A crash in the middle of a write: the file ends inside a command, 40 % of the writes cut off.
    const bytes = readFileSync(incrFile(server));
    truncateSync(incrFile(server), commandStartAfter(bytes, 0.6) + 3);
    await queue.submitMany(Array.from({ length: 20 }, () => ({ strategyId: "while-down" })));

    const before = reports.length;
    await server.restart();
    await eventually(async () => queue.mode === "redis");
    expect(redisLog(server)).toMatch(/loaded anyway because aof-load-truncated is enabled/);
    await eventually(async () => (await indexDiff(client, prefix, schema)).length === 0);
    expect(await queue.length()).toBe(420);
    // More than the 20 submitted while Redis was down were added: the builds the cut tail lost.
    const recovery = reports.slice(before).find((r) => r.added > 0);
    expect(recovery?.added).toBeGreaterThan(20);
    expect(recovery?.lostData).toBe(false);
    const resumed = lines.find(
      (l) => l.msg === "Redis available: index reconciled, fast path resumed" && l.added,
    );
    expect(resumed?.added).toBe(recovery?.added);

    const report = await checkPersistence(client);
    const lastStart = report.checks.find((c) => c.name === "last_start");
    expect(lastStart?.status).toBe("warn");
    expect(lastStart?.message).toMatch(/loaded a truncated AOF and dropped its cut tail/);
  });

  it("a corrupt AOF: Redis refuses to start, the queue runs on PostgreSQL; after redis-check-aof --fix it reconciles", async () => {
    const { server, queue, schema, prefix, client, lines } = await setup("aof_corrupt", 200);
    await killRedis(server, queue);
    const bytes = readFileSync(incrFile(server));
    bytes[commandStartAfter(bytes, 0.4)] = "?".charCodeAt(0);
    writeFileSync(incrFile(server), bytes);

    const attempt = await startRedisOn(server);
    expect(attempt.code).toBe(1);
    expect(redisLog(server)).toMatch(/Bad file format reading the append only file/);
    expect(lines.some((l) => l.msg === "Redis unavailable: serving from PostgreSQL")).toBe(true);
    const doctor = await oculus(["doctor", "--redis-url", server.url]);
    expect(doctor.code).toBe(1);
    expect(doctor.stdout).toMatch(/FAIL {2}connection/);

    // Meanwhile the queue works on PostgreSQL: submits, and claims in dispatch order.
    await queue.submitMany(Array.from({ length: 30 }, () => ({ strategyId: "while-down", priority: 10 })));
    const claimed = await queue.claim("w", 10);
    expect(claimed.map((b) => b.strategyId)).toEqual(Array(10).fill("while-down"));
    for (const b of claimed) await queue.complete(b.id, b.lease);
    expect(queue.mode).toBe("postgres");

    const manifest = path.join(server.dir, "appendonlydir", "appendonly.aof.manifest");
    const fix = await runTool("redis-check-aof", ["--fix", manifest], { input: "y\n" });
    expect(fix.code).toBe(0);
    expect(fix.stdout).toMatch(/Successfully truncated AOF/);
    await server.restart();
    await eventually(async () => queue.mode === "redis");
    await eventually(async () => (await indexDiff(client, prefix, schema)).length === 0);
    expect(await queue.length()).toBe(220);
    expect(lines.some((l) => l.msg === "Redis available: index reconciled, fast path resumed")).toBe(true);
  });

  it("an empty Redis (data directory lost): the index is rebuilt from PostgreSQL, with a warning", async () => {
    const { server, queue, schema, prefix, client, lines } = await setup("aof_lost", 150);
    await killRedis(server, queue);
    rmSync(path.join(server.dir, "appendonlydir"), { recursive: true, force: true });
    await server.restart();
    await eventually(async () => queue.mode === "redis");
    await eventually(async () => (await indexDiff(client, prefix, schema)).length === 0);
    expect(await queue.length()).toBe(150);
    const warning = lines.find((l) => /Redis had lost its data \(index marker missing\)/.test(l.msg));
    expect(warning).toMatchObject({ level: 40, queued: 150, added: 150, lostData: true });
    const report = await checkPersistence(client);
    expect(report.checks.find((c) => c.name === "last_start")?.value).toBe("started without an AOF");
  });
});

/** Starts redis-server on the test server's port and directory; resolves with its exit code (it should exit). */
async function startRedisOn(server: RedisServer): Promise<{ code: number | null }> {
  const args = privateServerArgs(server.port, server.dir, path.join(server.dir, "redis.log"));
  args.push("--appendonly", "yes");
  const child: ChildProcess = spawn("redis-server", args, { stdio: "ignore" });
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
  clearTimeout(timer);
  return { code };
}
