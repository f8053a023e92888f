/**
 * /health and /metrics as the stores come and go: PostgreSQL cut off (through a TCP proxy) gives 503
 * and store_unavailable without internals, a pool busy with long statements gives "busy" (200),
 * Redis stopped gives "degraded" in PostgreSQL mode, and the Redis persistence report of the
 * provider shows in both. A read-only PostgreSQL (a private cluster with default_transaction_read_only,
 * as a standby after a failover) gives 503 "read-only" in /health and 503 + Retry-After on writes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PersistenceReport } from "../../src/http/server.js";
import { countBuilds, openTestApi, type TestApi } from "../helpers/api.js";
import { PgCluster } from "../helpers/pg-cluster.js";
import { TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

describe("health and metrics as the stores come and go", () => {
  let redis: RedisServer;
  let proxy: TcpProxy;
  let api: TestApi;
  let report: PersistenceReport | undefined;

  beforeAll(async () => {
    redis = await RedisServer.start({ appendonly: false });
    const pg = new URL(TEST_DATABASE_URL);
    proxy = await TcpProxy.start(Number(pg.port || 5432), pg.hostname);
    pg.host = `127.0.0.1:${proxy.port}`;
    api = await openTestApi("http_health", {
      persistence: () => report,
      queue: { databaseUrl: pg.toString(), redisUrl: redis.url },
    });
    await eventually(async () => api.queue.mode === "redis");
  });
  afterAll(async () => {
    proxy?.restore();
    await api?.cleanup();
    await proxy?.close();
    await redis?.destroy();
  });

  it("the persistence report shows in /health (a failing check: degraded, still 200) and as gauges", async () => {
    report = {
      status: "fail",
      checks: [
        { name: "appendonly", status: "pass", value: "yes", message: "AOF is on", fix: null },
        {
          name: "maxmemory-policy",
          status: "fail",
          value: "allkeys-lru",
          message: "evicts keys",
          fix: "set noeviction",
        },
      ],
    };
    const health = await api.fetch("GET", "/health");
    expect(health.status).toBe(200);
    expect(health.json).toMatchObject({ status: "degraded", redis: { status: "up" }, persistence: report });
    const metrics = await api.fetch("GET", "/metrics");
    expect(metrics.text).toMatch(/^oculus_redis_persistence_status 2$/m);
    expect(metrics.text).toMatch(/^oculus_redis_persistence_check\{check="appendonly"\} 0$/m);
    expect(metrics.text).toMatch(/^oculus_redis_persistence_check\{check="maxmemory-policy"\} 2$/m);
    report = { status: "pass", checks: [] };
    expect((await api.fetch("GET", "/health")).json.status).toBe("ok");
  });

  it("Redis stopped: 200, degraded, Redis unavailable, mode postgres; submits still work", async () => {
    await redis.stop();
    await eventually(async () => (await api.fetch("GET", "/health")).json.mode === "postgres");
    const health = await api.fetch("GET", "/health");
    expect(health.status).toBe(200);
    expect(health.json).toMatchObject({
      status: "degraded",
      redis: { status: "unavailable" },
      postgres: { status: "up" },
    });
    expect((await api.fetch("POST", "/v1/builds", { body: { strategyId: "no-redis" } })).status).toBe(201);
    expect((await api.fetch("GET", "/metrics")).text).toMatch(/^oculus_queue_mode\{mode="postgres"\} 1$/m);
    await redis.restart();
    await eventually(async () => (await api.fetch("GET", "/health")).json.status === "ok");
  });

  it("PostgreSQL busy (every pooled connection in a long statement): 200, degraded, postgres busy", async () => {
    const db = api.queue.store.db;
    await db.query("SELECT 1");
    // The pool holds 10 connections: each sleeps past the 2 s ping timeout, and the ping waits behind them.
    const sleepers = Array.from({ length: 10 }, () => db.query("SELECT pg_sleep(3)"));
    try {
      const health = await api.fetch("GET", "/health");
      expect(health.status).toBe(200);
      expect(health.json).toMatchObject({ status: "degraded", postgres: { status: "busy" } });
      expect(health.json.postgres.lastAnswerMsAgo).toBeLessThan(5000);
    } finally {
      await Promise.all(sleepers);
    }
    expect((await api.fetch("GET", "/health")).json).toMatchObject({
      status: "ok",
      postgres: { status: "up" },
    });
  });

  it("PostgreSQL cut off: /health 503, a submit 503 store_unavailable with no internals; back when it returns", async () => {
    const before = await countBuilds(api.queue);
    proxy.cut();
    const health = await api.fetch("GET", "/health");
    expect(health.status).toBe(503);
    expect(health.json).toMatchObject({ status: "unavailable", postgres: { status: "down" } });
    const submit = await api.fetch("POST", "/v1/builds", { body: { strategyId: "no-postgres" } });
    expect(submit.status).toBe(503);
    expect(submit.json.error).toMatchObject({ code: "store_unavailable", reason: "unreachable" });
    expect(submit.json.error.message).toMatch(/unreachable; retry later/);
    expect(Number(submit.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    expect(submit.text).not.toMatch(/127\.0\.0\.1|ECONN|:\d{4,5}/);
    proxy.restore();
    await eventually(async () => (await api.fetch("GET", "/health")).status === 200);
    expect(await countBuilds(api.queue)).toBe(before);
  });
});

describe("health with a read-only PostgreSQL (a standby after a failover)", () => {
  let cluster: PgCluster;
  let api: TestApi;

  beforeAll(async () => {
    cluster = await PgCluster.start();
    api = await openTestApi("http_health_ro", { queue: { databaseUrl: cluster.url() } });
  });
  afterAll(async () => {
    await api?.cleanup();
    cluster?.destroy();
  });

  it("/health 503 with postgres read-only, writes 503 read_only with Retry-After, reads 200; all well once writable", async () => {
    const { json: created } = await api.fetch("POST", "/v1/builds", { body: { strategyId: "before" } });
    await cluster.setReadOnly(true);
    try {
      const health = await eventually(async () => {
        const res = await api.fetch("GET", "/health");
        return res.status === 503 && res;
      });
      expect(health.json).toMatchObject({ status: "unavailable", postgres: { status: "read-only" } });
      const submit = await api.fetch("POST", "/v1/builds", { body: { strategyId: "while-read-only" } });
      expect(submit.status).toBe(503);
      expect(submit.json.error).toMatchObject({ code: "store_unavailable", reason: "read_only" });
      expect(submit.json.error.message).toMatch(/read-only/);
      expect(Number(submit.headers["retry-after"])).toBeGreaterThanOrEqual(1);
      expect((await api.fetch("GET", `/v1/builds/${created.build.id}`)).status).toBe(200);
    } finally {
      await cluster.setReadOnly(false);
    }
    await eventually(async () => (await api.fetch("GET", "/health")).json.status === "ok");
    expect((await api.fetch("POST", "/v1/builds", { body: { strategyId: "after" } })).status).toBe(201);
  });
});
