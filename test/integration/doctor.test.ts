/**
 * `oculus doctor` and the persistence checks against real redis-server processes: the shipped
 * configuration files pass; no AOF fails and names appendonly; allkeys-lru fails; a managed-style
 * Redis with CONFIG renamed gets a warning, not a crash; a replica is reported; risky fsync settings
 * warn. The PersistenceMonitor logs a check that turns bad, and again when it recovers.
 */
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { checkPersistence, PersistenceMonitor, type PersistenceReport } from "../../src/index.js";
import { oculus } from "../helpers/oculus-cli.js";
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import { ConfRedis, capturingLogger } from "../helpers/redis-conf.js";
import { RedisServer } from "../helpers/redis-server.js";

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

async function server(options: Parameters<typeof RedisServer.start>[0] = {}): Promise<RedisServer> {
  const s = await RedisServer.start(options);
  cleanups.push(() => s.destroy());
  return s;
}

async function report(redisServer: {
  client(): ReturnType<RedisServer["client"]>;
}): Promise<PersistenceReport> {
  const client = redisServer.client();
  try {
    return await checkPersistence(client);
  } finally {
    client.disconnect();
  }
}

const byName = (r: PersistenceReport, name: string) => r.checks.find((c) => c.name === name);

describe("the shipped Redis configuration files", () => {
  it("production.conf passes every check, and `oculus doctor` exits 0", async () => {
    const redis = await ConfRedis.start(path.resolve("deploy/redis/production.conf"));
    cleanups.push(() => redis.destroy());
    const r = await report(redis);
    expect(r.checks.filter((c) => c.status !== "pass")).toEqual([]);
    expect(byName(r, "appendonly")?.value).toBe("yes");
    expect(byName(r, "maxmemory-policy")?.value).toBe("noeviction");
    const res = await oculus(["doctor", "--redis-url", redis.url]);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/PASS {2}appendfsync +\s*= everysec/);
  });

  it("development.conf (its relative dir and log file) passes every check", async () => {
    const cwd = mkdtempSync(path.join(tmpdir(), "oculus-devconf-"));
    mkdirSync(path.join(cwd, ".oculus/redis"), { recursive: true });
    const redis = await ConfRedis.start(path.resolve("deploy/redis/development.conf"), { cwd });
    cleanups.push(() => redis.destroy());
    const r = await report(redis);
    expect(r.checks.filter((c) => c.status !== "pass")).toEqual([]);
    // The log file was found relative to dir, and says the server began without an AOF.
    expect(byName(r, "last_start")?.value).toBe("started without an AOF");
  });
});

describe("oculus doctor", () => {
  it("fails on a Redis without AOF, naming appendonly and the fix", async () => {
    const redis = await server({ appendonly: false });
    const res = await oculus(["doctor", "--redis-url", redis.url]);
    expect(res.code).toBe(1);
    expect(res.stdout).toMatch(/FAIL {2}appendonly +\s*= no/);
    expect(res.stdout).toMatch(/fix: CONFIG SET appendonly yes/);
    const json = await oculus(["doctor", "--json"], { REDIS_URL: redis.url });
    expect(json.code).toBe(1);
    const parsed = JSON.parse(json.stdout) as { status: string; redis: PersistenceReport };
    expect(parsed.status).toBe("fail");
    expect(byName(parsed.redis, "appendonly")).toMatchObject({ status: "fail", value: "no" });
  });

  it("passes (exit 0) with AOF on, and checks PostgreSQL and the index when given DATABASE_URL", async () => {
    const redis = await server({ appendonly: true });
    const schema = uniqueSchema("doctor");
    cleanups.push(() => dropSchema(schema));
    const migrated = await oculus(["migrate", "--database-url", TEST_DATABASE_URL, "--schema", schema]);
    expect(migrated.code).toBe(0);
    const res = await oculus(["doctor", "--json"], {
      REDIS_URL: redis.url,
      DATABASE_URL: TEST_DATABASE_URL,
      OCULUS_SCHEMA: schema,
    });
    expect(res.code).toBe(0);
    const parsed = JSON.parse(res.stdout) as {
      status: string;
      redis: PersistenceReport;
      postgres: { name: string; status: string; value: unknown }[];
      queue: { name: string; status: string }[];
    };
    expect(parsed.redis.checks.filter((c) => c.status === "fail")).toEqual([]);
    expect(byName(parsed.redis, "appendonly")?.status).toBe("pass");
    expect(parsed.postgres.map((c) => [c.name, c.status])).toEqual([
      ["postgres", "pass"],
      ["postgres_schema", "pass"],
    ]);
    // The server's version (SHOW's column is server_version), and the schema check says what it counts.
    expect(String(parsed.postgres[0]?.value)).toMatch(/^\d+(\.\d+)?/);
    expect(parsed.postgres[1]?.value).toBe(`${schema}: migrated, 0 queued`);
    const text = await oculus(["doctor"], {
      REDIS_URL: redis.url,
      DATABASE_URL: TEST_DATABASE_URL,
      OCULUS_SCHEMA: schema,
    });
    expect(text.stdout).toMatch(/\n(WARN|PASS): 0 failing, \d+ warnings?, \d+ passing/);
    expect(text.stdout).not.toMatch(/\b1 warnings\b/);
    expect(text.stdout).not.toMatch(/postgres\s+= unknown/);
    // A Redis no queue has used yet has no index marker: told, as a warning.
    expect(parsed.queue.map((c) => [c.name, c.status])).toEqual([
      ["index_marker", "warn"],
      ["index_size", "pass"],
    ]);
  });

  it("fails on maxmemory-policy allkeys-lru", async () => {
    const redis = await server({ extraArgs: ["--maxmemory-policy", "allkeys-lru"] });
    const res = await oculus(["doctor", "--redis-url", redis.url]);
    expect(res.code).toBe(1);
    expect(res.stdout).toMatch(/FAIL {2}maxmemory-policy +\s*= allkeys-lru/);
    expect(res.stdout).toMatch(/fix: CONFIG SET maxmemory-policy noeviction/);
  });

  it("says clearly when no Redis is configured or it is unreachable", async () => {
    const none = await oculus(["doctor"]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/doctor needs Redis: set --redis-url or REDIS_URL/);
    const redis = await server();
    await redis.kill9();
    const down = await oculus(["doctor", "--redis-url", redis.url]);
    expect(down.code).toBe(1);
    expect(down.stdout).toMatch(/FAIL {2}connection/);
    expect(down.stdout).toMatch(/ECONNREFUSED/);
  });
});

describe("checkPersistence", () => {
  it("warns, without crashing, when CONFIG is renamed away (managed Redis), and still reads INFO", async () => {
    const redis = await server({ extraArgs: ["--rename-command", "CONFIG", ""] });
    const r = await report(redis);
    expect(byName(r, "config")?.status).toBe("warn");
    expect(byName(r, "config")?.message).toMatch(/CONFIG is disabled or renamed/);
    expect(byName(r, "appendonly")).toMatchObject({ status: "pass", value: "yes" });
    expect(byName(r, "maxmemory-policy")).toMatchObject({ status: "pass", value: "noeviction" });
    expect(byName(r, "appendfsync")).toMatchObject({ status: "warn", value: null });
    expect(r.status).toBe("warn");
  });

  it("warns on appendfsync no and no-appendfsync-on-rewrite yes", async () => {
    const redis = await server({ appendfsync: "no", extraArgs: ["--no-appendfsync-on-rewrite", "yes"] });
    const r = await report(redis);
    expect(byName(r, "appendfsync")?.status).toBe("warn");
    expect(byName(r, "no-appendfsync-on-rewrite")?.status).toBe("warn");
    expect(byName(r, "no-appendfsync-on-rewrite")?.message).toMatch(/not fsynced/);
  });

  it("reports replication: a master with its replica, and a replica as the wrong Redis to use", async () => {
    // No wait for more replicas before the first (diskless) sync.
    const master = await server({ extraArgs: ["--repl-diskless-sync-delay", "0"] });
    const replica = await server({ extraArgs: ["--replicaof", "127.0.0.1", String(master.port)] });
    await eventually(async () =>
      byName(await report(replica), "replication")
        ?.value?.toString()
        .includes("link up"),
    );
    const onReplica = byName(await report(replica), "replication");
    expect(onReplica?.status).toBe("fail");
    expect(onReplica?.message).toMatch(/replica.*READONLY/);
    // The master lists the replica before its state is "online" (a warning until then): wait for it.
    let last: unknown;
    const onMaster = await eventually(async () => {
      const check = byName(await report(master), "replication");
      last = check;
      return check?.value?.toString().includes("1 replicas") && check.status === "pass" ? check : undefined;
    }).catch((err: Error) => {
      throw new Error(`${err.message}: the master's replication check stayed ${JSON.stringify(last)}`);
    });
    expect(onMaster.status).toBe("pass");
    expect(onMaster.message).toMatch(/online and current/);
  });
});

describe("PersistenceMonitor", () => {
  it("logs a check that turns to fail, keeps the latest report, and logs the recovery", async () => {
    const redis = await server();
    const admin = redis.client();
    cleanups.push(async () => admin.disconnect());
    const { logger, lines } = capturingLogger();
    const monitor = new PersistenceMonitor(() => redis.client(), { intervalMs: 200, logger });
    cleanups.push(() => monitor.stop());
    const first = await monitor.checkNow();
    expect(first.status).not.toBe("fail");
    monitor.start();

    await admin.config("SET", "maxmemory-policy", "allkeys-lru");
    await eventually(async () => monitor.latest()?.status === "fail");
    const failing = monitor.latest()?.checks.find((c) => c.status === "fail");
    expect(failing?.name).toBe("maxmemory-policy");
    await eventually(async () => lines.some((l) => /maxmemory-policy: fail/.test(l.msg)));

    await admin.config("SET", "maxmemory-policy", "noeviction");
    await eventually(async () => lines.some((l) => /maxmemory-policy passes again/.test(l.msg)));
    // Logged once per change, not on every run.
    expect(lines.filter((l) => /maxmemory-policy: fail/.test(l.msg))).toHaveLength(1);
    await monitor.stop();

    // A Redis that is gone: the report says so (one failing "connection" check) instead of throwing.
    const gone = new PersistenceMonitor(() => redis.client(), { timeoutMs: 1000 });
    cleanups.push(() => gone.stop());
    await redis.kill9();
    const down = await gone.checkNow();
    expect(down.status).toBe("fail");
    expect(down.checks.map((c) => c.name)).toEqual(["connection"]);
  });
});
