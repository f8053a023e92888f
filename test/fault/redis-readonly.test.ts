/**
 * A plain redis:// server demoted to a replica (`REPLICAOF` of another private redis-server: writes
 * answer `-READONLY You can't write against a read only replica`) while two queues submit and claim
 * under load. A READONLY reply is a Redis failure: both queues go to PostgreSQL and stay there while
 * the server is a replica (its probes fail), no caller sees an error, every build whose submit
 * returned runs exactly once. Once the server is a master again (`REPLICAOF NO ONE`) a probe passes,
 * the reconciler rebuilds the index (the sync from the empty primary wiped it) and the fast path
 * resumes on the same server. The times are printed (docs/operations.md quotes them).
 */
import type { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import {
  allCompleted,
  expectEachCompletedOnce,
  indexDiff,
  waitForIndexToMatch,
} from "../helpers/index-state.js";
import { Load } from "../helpers/load.js";
import { type ModeLog, runOnPostgres, watchModes } from "../helpers/mode-log.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

/** Milliseconds from `since` to the queue's first switch to `mode` after it. */
function switchedAfter(log: ModeLog, mode: string, since: number): number | undefined {
  const change = log.modes.find((m) => m.mode === mode && m.at >= since);
  return change ? change.at - since : undefined;
}

async function isReplicaInSync(client: Redis): Promise<boolean> {
  const info = await client.info("replication");
  return /^role:slave/m.test(info) && /master_link_status:up/.test(info);
}

describe("a redis:// server demoted to a READONLY replica under load", () => {
  it("serves from PostgreSQL while READONLY, nothing lost, each build once; back to Redis after REPLICAOF NO ONE", async () => {
    const server = await RedisServer.start({ appendonly: false });
    cleanups.push(() => server.destroy());
    const primary = await RedisServer.start({ appendonly: false });
    cleanups.push(() => primary.destroy());
    const client = server.client({ maxRetriesPerRequest: 1 });
    client.on("error", () => undefined);
    cleanups.push(async () => client.disconnect());

    const first = await openTestQueue("redis_readonly_load", { redisUrl: server.url });
    cleanups.push(first.cleanup);
    const second = await openTestQueue("redis_readonly_load", {
      redisUrl: server.url,
      schema: first.schema,
      prefix: first.prefix,
    });
    cleanups.push(second.cleanup);
    const queues: BuildQueue[] = [first.queue, second.queue];
    const logs: ModeLog[] = queues.map((q) => watchModes(q));
    expect(queues.map((q) => q.mode)).toEqual(["redis", "redis"]);

    const load = new Load();
    cleanups.push(() => load.stop());
    const until = (label: string, check: () => Promise<boolean>, timeoutMs = 30_000) =>
      eventually(check, timeoutMs).catch((err) => {
        const state = {
          modes: queues.map((q) => q.mode),
          changes: logs.map((l) => l.modes.map((m) => [m.mode, m.cause])),
          submitted: load.submitted.size,
          completed: load.completed.size,
          errors: load.errors.slice(0, 5),
        };
        throw new Error(`${label}: ${(err as Error).message} ${JSON.stringify(state)}`);
      });
    const seeded = await first.queue.submitMany(
      Array.from({ length: 500 }, (_, j) => ({ strategyId: "seed", priority: j % 4, params: { j } })),
    );
    for (const r of seeded) load.submitted.add(r.build.id);
    load.startSubmits(first.queue);
    load.startClaims(first.queue, "a1");
    load.startClaims(second.queue, "b1");
    await until("claims before the demotion", async () => load.completed.size >= 200);

    // The demotion: the server syncs from the empty primary (its data set, the index too, is replaced
    // by the primary's) and refuses every write from then on.
    const demotedAt = Date.now();
    await client.replicaof("127.0.0.1", primary.port);
    await until("both queues on PostgreSQL", async () => queues.every((q) => q.mode === "postgres"));
    await until("the replica in sync", () => isReplicaInSync(client));
    await expect(client.set(`${first.prefix}:refused`, "1")).rejects.toThrow(/^READONLY/);
    const detection = logs.map((log) => switchedAfter(log, "postgres", demotedAt));

    // Builds keep being submitted, claimed and completed on PostgreSQL while the server is a replica,
    // and the queues stay there: every probe meets READONLY.
    const atDemotion = { submitted: load.submitted.size, completed: load.completed.size };
    await until(
      "work on PostgreSQL",
      async () =>
        load.completed.size >= atDemotion.completed + 300 &&
        load.submitted.size >= atDemotion.submitted + 100,
    );
    expect(queues.map((q) => q.mode)).toEqual(["postgres", "postgres"]);
    expect(await isReplicaInSync(client)).toBe(true);

    const promotedAt = Date.now();
    expect(await client.replicaof("NO", "ONE")).toBe("OK");
    await until(
      "both queues back on Redis",
      async () => queues.every((q) => q.mode === "redis"),
      // A probe backs off to 30 s at most while the fault lasts; then the reconcile.
      60_000,
    );
    const resumed = logs.map((log) => switchedAfter(log, "redis", promotedAt));
    const onPostgres = logs.map((log) => runOnPostgres(log, demotedAt));
    console.log(
      `redis READONLY: demotion -> postgres per queue ${detection.join(", ")} ms; REPLICAOF NO ONE -> fast path resumed per queue ${resumed.join(", ")} ms; on PostgreSQL per queue ${onPostgres.join(", ")} ms (the fault itself lasted ${promotedAt - demotedAt} ms); causes ${JSON.stringify(logs.map((l) => l.modes.filter((m) => m.cause).map((m) => m.cause)))}`,
    );

    // The fast path works again: claims keep completing in Redis mode, new builds reach the index.
    const atResume = load.completed.size;
    await until("claims on Redis", async () => load.completed.size >= atResume + 100);
    load.stopSubmits();
    await load.pauseClaims();
    const extra = await first.queue.submitMany(Array.from({ length: 20 }, () => ({ strategyId: "after" })));
    for (const r of extra) load.submitted.add(r.build.id);
    await waitForIndexToMatch(client, first.prefix, first.schema);
    expect(await client.zcard(`${first.prefix}:build_queue`)).toBeGreaterThanOrEqual(20);
    expect(queues.map((q) => q.mode)).toEqual(["redis", "redis"]);

    load.resumeClaims();
    await until("all completed", () => allCompleted(first.schema));
    await load.stop();

    expect(load.errors).toEqual([]);
    expect(load.duplicateClaims()).toEqual([]);
    for (const log of logs) {
      // Exactly one trip: down at the demotion (by a refused write), up once after the promotion.
      expect(log.modes.map((m) => m.mode)).toEqual(["postgres", "redis"]);
      expect(log.modes[0]?.cause).toMatch(/^(READONLY|LOADING)\b/);
      expect(log.modes[1]?.at).toBeGreaterThanOrEqual(promotedAt);
    }
    await expectEachCompletedOnce(first.schema, load.submitted);
    expect(new Set(load.claims.keys())).toEqual(load.submitted);
    await eventually(async () => (await indexDiff(client, first.prefix, first.schema)).length === 0);
  }, 180_000);
});
