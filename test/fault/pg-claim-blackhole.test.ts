/**
 * Issue 16: a build popped by a worker whose PostgreSQL link silently drops packets (a black hole:
 * nothing closes, nothing arrives) must not wait for that link to heal while other workers are idle.
 * The Redis-path claim is bounded (OCULUS_PG_CLAIM_TIMEOUT_MS, default 3 s): it is abandoned, the
 * popped id goes back into the index, and another worker claims and runs the build.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StoreUnavailableError } from "../../src/core/errors.js";
import { BuildQueue } from "../../src/index.js";
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

/** The link stays broken this long unless the claim gives up first (the old behaviour waited for it). */
const HEAL_AFTER_MS = 12_000;

describe("a claim whose PostgreSQL link is a black hole", () => {
  const schema = uniqueSchema("pg_claim_blackhole");
  const prefix = `blackhole${process.pid}`;
  let redis: RedisServer;
  let proxy: TcpProxy;
  let cutOff: BuildQueue;
  let healthy: BuildQueue;

  beforeAll(async () => {
    redis = await RedisServer.start({ appendonly: false });
    const pg = new URL(TEST_DATABASE_URL);
    proxy = await TcpProxy.start(Number(pg.port || 5432), pg.hostname);
    const proxied = new URL(TEST_DATABASE_URL);
    proxied.host = `127.0.0.1:${proxy.port}`;
    const options = { redisUrl: redis.url, schema, prefix, reconcileIntervalMs: 500 };
    healthy = await BuildQueue.open({ ...options, databaseUrl: TEST_DATABASE_URL });
    cutOff = await BuildQueue.open({ ...options, databaseUrl: proxied.toString() });
    await eventually(async () => healthy.mode === "redis" && cutOff.mode === "redis");
  });
  afterAll(async () => {
    proxy?.heal();
    await cutOff?.close();
    await healthy?.close();
    await proxy?.close();
    await redis?.destroy();
    await dropSchema(schema);
  });

  it("is abandoned within the bound and the popped build is claimed by another worker before the link heals", async () => {
    const { build } = await healthy.submit({ strategyId: "black-hole" });
    proxy.blackhole();
    const faultAt = Date.now();
    const healTimer = setTimeout(() => proxy.heal(), HEAL_AFTER_MS);
    try {
      // The cut-off worker pops the id from Redis (reachable) and sends its claim into the hole.
      const stuck = cutOff.claim("worker-cut-off").then(
        (claimed) => ({ claimed, error: undefined }),
        (error: unknown) => ({ claimed: [], error }),
      );
      await eventually(async () => (await healthy.counts()).ready === 0, 10_000);
      // The healthy worker keeps asking, as an idle claim loop does.
      const claimed = await eventually(async () => {
        const got = await healthy.claim("worker-healthy");
        return got.length > 0 && got;
      }, HEAL_AFTER_MS - 2000);
      const recoveredMs = Date.now() - faultAt;
      console.log(`claim black hole: build claimed by another worker ${recoveredMs} ms after the fault`);
      expect(claimed.map((b) => b.id)).toEqual([build.id]);
      const outcome = await stuck;
      expect(outcome.claimed).toEqual([]);
      expect(outcome.error).toBeInstanceOf(StoreUnavailableError);
      expect(Date.now() - faultAt).toBeLessThan(HEAL_AFTER_MS);
    } finally {
      clearTimeout(healTimer);
      proxy.heal();
    }
    // The build belongs to the healthy worker and completes there, once.
    const running = await healthy.get(build.id);
    expect(running).toMatchObject({ status: "running", workerId: "worker-healthy" });
    await healthy.complete(build.id, running.lease, { ok: true });
    // The healed worker works again, and sees the build as done.
    await eventually(async () => (await cutOff.get(build.id)).status === "completed", 20_000);
  });
});
