/**
 * The idle cost of the empty-pop fallback: ten idle workers and an API on the Redis path, each
 * polling about once a second. Every empty pop may also claim on PostgreSQL, but only the claimer
 * that wins the fleet-wide turn (a SET NX with a 1 s expiry) does, so the fleet runs about one
 * claim_next a second in total, not one per worker. Counted on a private cluster with
 * pg_stat_statements; the whole fleet's statements per second are printed and bounded (issue 15's
 * target: under 20). The housekeeping pass (reaper and admission sweep, five statements) is made
 * once a second by the fleet, not once per process (64 statements/s before that turn, 14 after).
 * A busy machine makes fewer timer-driven statements, never more: the bound holds under load.
 */
import { afterAll, describe, expect, it } from "vitest";
import { BuildQueue } from "../../src/index.js";
import { Worker } from "../../src/worker/worker.js";
import { PgCluster } from "../helpers/pg-cluster.js";
import { RedisServer } from "../helpers/redis-server.js";

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

const WORKERS = 10;
const MEASURE_MS = 10_000;

describe("an idle fleet on the Redis path", () => {
  it("looks on PostgreSQL after empty pops about once a second fleet-wide", async () => {
    const cluster = await PgCluster.start({ settings: { shared_preload_libraries: "pg_stat_statements" } });
    cleanups.push(async () => cluster.destroy());
    await cluster.sql("CREATE EXTENSION pg_stat_statements");
    const redis = await RedisServer.start({ appendonly: false });
    cleanups.push(() => redis.destroy());
    const options = { databaseUrl: cluster.url(), redisUrl: redis.url, schema: "idle", prefix: "idle" };

    const api = await BuildQueue.open(options);
    cleanups.push(() => api.close());
    api.startReaper();
    for (let i = 0; i < WORKERS; i++) {
      const queue = await BuildQueue.open(options);
      cleanups.push(() => queue.close());
      queue.startReaper();
      expect(queue.mode).toBe("redis");
      const worker = new Worker(queue, { id: `idle-${i}`, handler: async () => ({}) });
      await worker.start();
      cleanups.push(() => worker.stop());
    }
    await new Promise((r) => setTimeout(r, 3000)); // past start-up
    await cluster.sql("SELECT pg_stat_statements_reset()");
    await new Promise((r) => setTimeout(r, MEASURE_MS));
    const rows = await cluster.sql<{ query: string; calls: number }>(
      "SELECT query, calls::int AS calls FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC",
    );
    const total = rows.reduce((n, r) => n + r.calls, 0);
    const claims = rows.filter((r) => r.query.includes("claim_next")).reduce((n, r) => n + r.calls, 0);
    const perSecond = (n: number) => (n / (MEASURE_MS / 1000)).toFixed(1);
    console.log(
      `idle fleet (1 API + ${WORKERS} workers, Redis path): ${perSecond(total)} statements/s, ` +
        `of which fallback claims ${perSecond(claims)}/s\n` +
        rows
          .slice(0, 8)
          .map((r) => `  ${r.calls}  ${r.query.replace(/\s+/g, " ").slice(0, 90)}`)
          .join("\n"),
    );
    // One turn a second fleet-wide (a turn missed to timing makes it fewer, never more).
    expect(claims).toBeLessThanOrEqual(MEASURE_MS / 1000 + 2);
    const passes = rows.filter((r) => r.query.includes("try_reaper_lock")).reduce((n, r) => n + r.calls, 0);
    expect(passes).toBeLessThanOrEqual(MEASURE_MS / 1000 + 2);
    expect(total / (MEASURE_MS / 1000)).toBeLessThan(20);
  }, 120_000);
});
