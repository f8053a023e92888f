/**
 * A Redis fault during the way back: Redis returns, the probe passes and the recovery's reconcile
 * starts, then the connection is cut before the reconcile ends (a Sentinel failover does exactly this:
 * the client reconnects to the promoted master while the queue is recovering). The probes asked for
 * meanwhile (by the fault and by the reconnection) must not be lost: the queue returns to the fast
 * path once the recovery can finish. Here the recovery is held mid-way by holding the reconciler's
 * advisory lock from another session, so the fault lands inside it every time.
 */
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { redisKeys } from "../../src/redis/keys.js";
import { watchModes } from "../helpers/mode-log.js";
import { TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const cleanups: (() => Promise<void>)[] = [];

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

describe("a Redis fault while the queue recovers", () => {
  it("probes again after the recovery it interrupted, and resumes the fast path", async () => {
    // No persistence: the restarted server is empty, so the probe's key appears only when a probe ran.
    const server = await RedisServer.start({ appendonly: false });
    cleanups.push(() => server.destroy());
    const { queue, schema, prefix, cleanup } = await openTestQueue("redis_recovery_fault", {
      redisUrl: server.url,
    });
    cleanups.push(cleanup);
    const log = watchModes(queue);
    expect(queue.mode).toBe("redis");
    await queue.submitMany(Array.from({ length: 20 }, (_, j) => ({ strategyId: "before", params: { j } })));

    // Another session holds the reconciler's lock: a recovery waits for it (up to 15 s) mid-way.
    const holder = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await holder.connect();
    cleanups.push(() => holder.end());
    await holder.query("BEGIN");
    await holder.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`oculus:reconcile:${schema}`]);

    await server.kill9();
    await eventually(async () => queue.mode === "postgres");
    await queue.submitMany(Array.from({ length: 20 }, (_, j) => ({ strategyId: "during", params: { j } })));
    await server.restart();
    const admin = server.client();
    cleanups.push(async () => admin.disconnect());
    // The probe passed (it writes its key): the recovery is waiting for the lock.
    await eventually(async () => (await admin.exists(redisKeys(prefix).writeProbe)) === 1, 30_000);
    expect(queue.mode).toBe("postgres");

    // The fault inside the recovery: the queue's connections are cut; ioredis reconnects at once.
    const before = Number(/connected_clients:(\d+)/.exec(await admin.info("clients"))?.[1]);
    expect(await admin.client("KILL", "TYPE", "normal", "SKIPME", "yes")).toBeGreaterThan(0);
    await eventually(async () => {
      const now = Number(/connected_clients:(\d+)/.exec(await admin.info("clients"))?.[1]);
      return now >= before;
    });
    // Give the fault's probe timer and the reconnection's probe time to fire while the recovery is
    // still held (they are what a lost request would lose), then let the recovery finish.
    await new Promise((r) => setTimeout(r, 2000));
    expect(queue.mode).toBe("postgres");
    await holder.query("COMMIT");

    await eventually(async () => queue.mode === "redis", 30_000);
    expect(log.modes.map((m) => m.mode)).toEqual(["postgres", "redis"]);
    // The fast path works: the index holds every queued build and claims come from it.
    expect(await queue.length()).toBe(40);
    const claimed = await queue.claim("w1", 40);
    expect(claimed).toHaveLength(40);
    expect(new Set(claimed.map((b) => b.id)).size).toBe(40);
  }, 90_000);
});
