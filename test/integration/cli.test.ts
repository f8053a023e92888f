/**
 * The `oculus` command as a user runs it: the built binary (npm test builds it first), real servers.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildQueue } from "../../src/index.js";
import { oculus } from "../helpers/oculus-cli.js";
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from "../helpers/postgres.js";
import { RedisServer } from "../helpers/redis-server.js";

describe("oculus CLI", () => {
  const schema = uniqueSchema("cli");
  const dataDir = mkdtempSync(path.join(tmpdir(), "oculus-cli-"));
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await RedisServer.start({ appendonly: false });
  });
  afterAll(async () => {
    await redis?.destroy();
    await dropSchema(schema);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("stops at a bad setting with a message naming it", async () => {
    const res = await oculus(["migrate"], { DATABASE_URL: "mysql://nope" });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/invalid DATABASE_URL \(--database-url \/ DATABASE_URL\): must be a postgres/);
    const flag = await oculus(["--prefix", "bad prefix!", "migrate"]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/invalid --prefix/);
  });

  it("prints --version, and exits 2 on bad usage (unknown command or option, missing argument)", async () => {
    const version = await oculus(["--version"]);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    const cases: [string[], RegExp][] = [
      [["nope"], /unknown command 'nope'/],
      [["status"], /missing required argument 'id'/],
      [["logs"], /missing required argument 'id'/],
      [["status", "x", "--bogus"], /unknown option '--bogus'/],
      [["up", "--workers", "x"], /--workers must be a non-negative integer/],
      [["builds", "--limit", "many"], /--limit must be an integer/],
      [
        ["worker", "--prefetch", "-1"],
        /--prefetch \/ OCULUS_PREFETCH must be a non-negative integer or "auto"/,
      ],
      [
        ["worker", "--prefetch", "soon"],
        /--prefetch \/ OCULUS_PREFETCH must be a non-negative integer or "auto"/,
      ],
    ];
    for (const [args, message] of cases) {
      const res = await oculus(args);
      expect(res.code, args.join(" ")).toBe(2);
      expect(res.stderr).toMatch(message);
    }
  });

  it("migrates a PostgreSQL server and the embedded store", async () => {
    const res = await oculus(["migrate"], { DATABASE_URL: TEST_DATABASE_URL, OCULUS_SCHEMA: schema });
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/applied 0001_builds/);
    const again = await oculus(["migrate", "--database-url", TEST_DATABASE_URL, "--schema", schema]);
    expect(again.stdout).not.toMatch(/applied/);
    const embedded = await oculus(["migrate", "--data-dir", dataDir]);
    expect(embedded.code).toBe(0);
    expect(embedded.stdout).toMatch(/applied 0002_workers/);
    expect(embedded.stdout).toMatch(/at migration \d+/);
  });

  it("reconciles on demand and reports what it did", async () => {
    const prefix = `cli${process.pid}`;
    const queue = await BuildQueue.open({
      databaseUrl: TEST_DATABASE_URL,
      schema,
      redisUrl: redis.url,
      prefix,
    });
    await queue.submitMany([{ strategyId: "a" }, { strategyId: "b" }, { strategyId: "c" }]);
    await queue.close();
    await redis.client().flushall();
    const env = {
      DATABASE_URL: TEST_DATABASE_URL,
      OCULUS_SCHEMA: schema,
      REDIS_URL: redis.url,
      OCULUS_PREFIX: prefix,
    };
    const res = await oculus(["reconcile", "--json"], env);
    expect(res.code).toBe(0);
    // Opening the queue already rebuilt the flushed index; the on-demand pass finds it equal.
    expect(JSON.parse(res.stdout)).toMatchObject({ queued: 3, removed: 0 });
    expect(await redis.client().zcard(`${prefix}:build_queue`)).toBe(3);
    const noRedis = await oculus(["reconcile"], { DATABASE_URL: TEST_DATABASE_URL, OCULUS_SCHEMA: schema });
    expect(noRedis.code).not.toBe(0);
    expect(noRedis.stderr).toMatch(/needs Redis/);
  });
});
