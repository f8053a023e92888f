/**
 * Redis Sentinel: kill -9 of the master (one master, one replica, three sentinels) while two queues
 * submit and claim through a redis-sentinel:// URL. The queues run on PostgreSQL while the sentinels
 * fail over, then reconcile with the promoted replica (which may lack the last writes) and resume the
 * fast path on it. Every build whose submit returned runs exactly once and completes; no caller sees
 * an error. How long each queue ran on PostgreSQL is printed (docs/operations.md quotes it). Also:
 * a Sentinel client that ioredis ends by itself connects again, and a planned switchover.
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import { createRedisClient } from "../../src/redis/connection.js";
import {
  allCompleted,
  expectEachCompletedOnce,
  indexDiff,
  waitForIndexToMatch,
} from "../helpers/index-state.js";
import { Load } from "../helpers/load.js";
import { type ModeLog, runOnPostgres, watchModes } from "../helpers/mode-log.js";
import { oculus } from "../helpers/oculus-cli.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisSentinelGroup } from "../helpers/redis-sentinel.js";
import { WorkerProcess } from "../helpers/worker-fleet.js";

describe("Redis Sentinel: master kill -9 under load", () => {
  let group: RedisSentinelGroup;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    group = await RedisSentinelGroup.start();
    cleanups.push(() => group.destroy());
  }, 60_000);

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });

  it("oculus doctor checks the master it resolves and reports the sentinels' view", async () => {
    const result = await oculus(["doctor", "--json"], { REDIS_URL: group.url });
    const report = JSON.parse(result.stdout) as {
      topology: { name: string; status: string; value: unknown }[];
    };
    const byName = new Map(report.topology.map((c) => [c.name, c]));
    expect(byName.get("master")).toMatchObject({
      status: "pass",
      value: `127.0.0.1:${await group.masterPort()}`,
    });
    expect(byName.get("sentinel-quorum")).toMatchObject({ status: "pass", value: "quorum 2, 3/3 reachable" });
    expect(byName.get("sentinel-replicas")).toMatchObject({ status: "pass", value: 1 });
    expect(byName.get("min-replicas-to-write")).toMatchObject({ status: "pass", value: 0 });
    // The sentinels' own view, in words, for people.
    const text = await oculus(["doctor"], { REDIS_URL: group.url });
    expect(text.stdout).toContain('Redis topology (Sentinel master "oculusmaster" via');
    expect(text.stdout).toMatch(/PASS {2}sentinel-quorum +(= )?quorum 2, 3\/3 reachable/);
    expect(text.stdout).toContain(`Redis redis-sentinel://127.0.0.1:${group.sentinels[0]?.port}`);
  });

  it("a Sentinel client ended by ioredis while it resolves the master connects again", async () => {
    // What ioredis 5 does when the previous connection's failover detector hears +switch-master while
    // a reconnection asks the sentinels for the master: the connector is disconnected mid-resolve, the
    // connect fails with "Connection is closed" and the client ends (no more reconnections). Staged
    // here by calling the connector's disconnect() at that moment, as the detector does.
    const client = createRedisClient(group.url, { lazyConnect: true, retryStrategy: () => 100 });
    client.on("error", () => undefined);
    cleanups.push(async () => client.disconnect());
    await client.connect();
    await client.subscribe("oculus-test-channel");
    const statuses: string[] = [];
    client.on("connecting", () => {
      statuses.push("connecting");
      if (statuses.length === 1)
        (client as unknown as { connector: { disconnect(): void } }).connector.disconnect();
    });
    client.on("end", () => statuses.push("end"));
    client.disconnect(true); // a lost connection: ioredis reconnects through the sentinels
    await eventually(async () => statuses.includes("end"));
    // It connects again by itself, subscriptions included.
    await eventually(async () => client.status === "ready", 15_000);
    const publisher = group.servers.get(await group.masterPort())?.client() as Redis;
    cleanups.push(async () => publisher.disconnect());
    const received = new Promise<string>((resolve) => client.once("message", (_c, m: string) => resolve(m)));
    await eventually(async () => (await publisher.publish("oculus-test-channel", "after")) === 1);
    expect(await received).toBe("after");
    client.disconnect();
    await eventually(async () => client.status === "end");
    await new Promise((r) => setTimeout(r, 500));
    expect(client.status).toBe("end"); // its owner's disconnect() is final
  });

  it("fails over to the replica: nothing lost, each build once, fast path resumed on the new master", async () => {
    const first = await openTestQueue("redis_sentinel", { redisUrl: group.url });
    cleanups.push(first.cleanup);
    const second = await openTestQueue("redis_sentinel", {
      redisUrl: group.url,
      schema: first.schema,
      prefix: first.prefix,
    });
    cleanups.push(second.cleanup);
    const queues: BuildQueue[] = [first.queue, second.queue];
    const logs: ModeLog[] = queues.map((q) => watchModes(q));
    expect(queues.map((q) => q.mode)).toEqual(["redis", "redis"]);
    const oldMaster = await group.masterPort();
    // A live event stream: its hub subscribes to <prefix>:events (wake-ups are subscribed at open).
    const streamAbort = new AbortController();
    const streaming = (async () => {
      for await (const _ of first.queue.events.subscribe({ signal: streamAbort.signal })) {
        // only the subscription matters here
      }
    })();
    cleanups.push(async () => {
      streamAbort.abort();
      await streaming.catch(() => undefined);
    });

    const load = new Load();
    cleanups.push(() => load.stop());
    const until = (label: string, check: () => Promise<boolean>, timeoutMs = 30_000) =>
      eventually(check, timeoutMs).catch((err) => {
        const state = {
          modes: queues.map((q) => q.mode),
          changes: logs.map((l) => l.modes.map((m) => m.mode)),
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
    // A worker process too: its claims, wake-ups and heartbeat thread (a connection of its own) follow.
    const worker = await WorkerProcess.start({
      workerId: "sentinel-worker",
      schema: first.schema,
      prefix: first.prefix,
      redisUrl: group.url,
      capacity: 2,
      // Its lease fence (80 %) must outlast the PostgreSQL-only stretch on a loaded machine, when both
      // queues' claims go to PostgreSQL too (1500 fenced a build now and then at load 15: the Cluster test).
      deadAfterMs: 4000,
    });
    cleanups.push(async () => void (await worker.terminate().catch(() => undefined)));

    await until("claims before the kill", async () => load.completed.size >= 200);
    const killedAt = Date.now();
    await group.servers.get(oldMaster)?.kill9();
    await until("postgres mode", async () => queues.every((q) => q.mode === "postgres"));
    // The sentinels promote the replica; the queues follow it without a restart.
    const newMaster = await group.waitSettled(30_000, oldMaster);
    expect(newMaster).not.toBe(oldMaster);
    await until("redis mode on the new master", async () => queues.every((q) => q.mode === "redis"));
    const resumedAt = Date.now();
    const onPostgres = logs.map((log) => runOnPostgres(log, killedAt));
    console.log(
      `sentinel failover: kill -9 to fast path resumed ${resumedAt - killedAt} ms; on PostgreSQL per queue: ${onPostgres.join(", ")} ms`,
    );

    // The fast path works on the new master: claims keep completing while in Redis mode.
    const atResume = load.completed.size;
    await until("claims on the new master", async () => load.completed.size >= atResume + 100);
    load.stopSubmits();
    await load.pauseClaims();
    const client = new Redis(newMaster, "127.0.0.1", { maxRetriesPerRequest: 1 });
    client.on("error", () => undefined);
    cleanups.push(async () => client.disconnect());
    expect(parseRole(await client.info("replication"))).toBe("master");
    // The worker process's heartbeat thread beats to the new master.
    await eventually(async () => {
      const [beat, [sec]] = await Promise.all([
        client.zscore(`${first.prefix}:worker_heartbeats`, "sentinel-worker"),
        client.time(),
      ]);
      return beat !== null && Number(sec) * 1000 - Number(beat) < 2000;
    }, 15_000).catch(async (err) => {
      const [beat, [sec]] = await Promise.all([
        client.zscore(`${first.prefix}:worker_heartbeats`, "sentinel-worker"),
        client.time(),
      ]);
      throw new Error(`${(err as Error).message} beat=${beat} now=${sec} ${worker.describe()}`);
    });
    // The subscribers followed: both queues' wake-ups and the event hub listen on the new master.
    await eventually(async () => {
      const counts = (await client.call(
        "PUBSUB",
        "NUMSUB",
        `${first.prefix}:wake`,
        `${first.prefix}:events`,
      )) as (string | number)[];
      return Number(counts[1]) >= 3 && Number(counts[3]) >= 1;
    }, 15_000);
    await waitForIndexToMatch(client, first.prefix, first.schema);
    expect(queues.map((q) => q.mode)).toEqual(["redis", "redis"]);

    load.resumeClaims();
    await until("all completed", () => allCompleted(first.schema), 30_000);
    await load.stop();

    expect(load.errors).toEqual([]);
    expect(load.duplicateClaims()).toEqual([]);
    for (const log of logs) {
      expect(log.modes[0]?.mode).toBe("postgres");
      expect(log.modes.at(-1)?.mode).toBe("redis");
    }
    await expectEachCompletedOnce(first.schema, load.submitted);
    const byWorker = worker.events.filter((e) => e.event === "started").map((e) => e.id as string);
    expect(new Set([...load.claims.keys(), ...byWorker])).toEqual(load.submitted);
    expect(new Set(byWorker).size).toBe(byWorker.length);
    expect(byWorker.length).toBeGreaterThan(0);
    expect(worker.running).toBe(true);
    // Everything is done: the index on the new master ends empty.
    await eventually(async () => (await indexDiff(client, first.prefix, first.schema)).length === 0);
  }, 120_000);

  it("follows a switchover (SENTINEL FAILOVER demotes the master to a replica) without a lost build", async () => {
    // The master killed above comes back: the sentinels make it a replica of the current master.
    const current = await group.masterPort();
    const comeback = [...group.servers.keys()].find((port) => port !== current) as number;
    const server = group.servers.get(comeback);
    if (!server?.running) await server?.restart(); // running when the kill test was left out (-t)
    const back = group.servers.get(comeback)?.client() as Redis;
    cleanups.push(async () => back.disconnect());
    await eventually(async () => {
      const info = await back.info("replication");
      return parseRole(info) === "slave" && /master_link_status:up/.test(info);
    }, 30_000);

    const first = await openTestQueue("redis_sentinel_demote", { redisUrl: group.url });
    cleanups.push(first.cleanup);
    const second = await openTestQueue("redis_sentinel_demote", {
      redisUrl: group.url,
      schema: first.schema,
      prefix: first.prefix,
    });
    cleanups.push(second.cleanup);
    const queues: BuildQueue[] = [first.queue, second.queue];
    const logs: ModeLog[] = queues.map((q) => watchModes(q));
    const load = new Load();
    cleanups.push(() => load.stop());
    load.startSubmits(first.queue);
    load.startClaims(first.queue, "a1");
    load.startClaims(second.queue, "b1");
    await eventually(async () => load.completed.size >= 100, 30_000);

    const switchedAt = Date.now();
    const sentinel = group.sentinels[0]?.client() as Redis;
    cleanups.push(async () => sentinel.disconnect());
    expect(await sentinel.call("SENTINEL", "FAILOVER", group.masterName)).toBe("OK");
    expect(await group.waitSettled(30_000, current)).toBe(comeback);
    // The fast path resumes on the promoted server: builds submitted now reach its index.
    await eventually(async () => {
      const atCheck = load.completed.size;
      await new Promise((r) => setTimeout(r, 300));
      return queues.every((q) => q.mode === "redis") && load.completed.size > atCheck;
    }, 30_000);
    console.log(
      `sentinel switchover: modes ${JSON.stringify(logs.map((l) => l.modes.map((m) => [m.mode, m.cause])))}; on PostgreSQL per queue: ${logs.map((l) => runOnPostgres(l, switchedAt) ?? 0).join(", ")} ms`,
    );
    load.stopSubmits();
    await load.pauseClaims();
    const extra = await first.queue.submitMany(Array.from({ length: 20 }, () => ({ strategyId: "after" })));
    for (const r of extra) load.submitted.add(r.build.id);
    await waitForIndexToMatch(back, first.prefix, first.schema);
    expect((await back.zcard(`${first.prefix}:build_queue`)) >= 20).toBe(true);

    load.resumeClaims();
    await eventually(() => allCompleted(first.schema), 30_000);
    await load.stop();
    expect(load.errors).toEqual([]);
    expect(load.duplicateClaims()).toEqual([]);
    await expectEachCompletedOnce(first.schema, load.submitted);
  }, 120_000);
});

function parseRole(info: string): string | undefined {
  return /^role:(\w+)/m.exec(info)?.[1];
}
