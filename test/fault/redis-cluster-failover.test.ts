/**
 * Redis Cluster: kill -9 of the master that owns the queue's slot (three masters, three replicas)
 * while two queues submit and claim through a redis-cluster:// URL with a hash-tag prefix, and a worker
 * process (its own queue, claim loop and heartbeat thread) claims too. The queues run on PostgreSQL
 * while the cluster fails over, then reconcile with the promoted replica and resume the fast path on
 * it; the worker's heartbeats reach the new master and it keeps running. Every build whose submit
 * returned runs exactly once and completes; no caller sees an error. How long each queue ran on
 * PostgreSQL is printed (docs/operations.md quotes it).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "../../src/core/errors.js";
import type { BuildQueue } from "../../src/index.js";
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
import { RedisClusterGroup } from "../helpers/redis-cluster.js";
import { WorkerProcess } from "../helpers/worker-fleet.js";

describe("Redis Cluster: slot master kill -9 under load", () => {
  let group: RedisClusterGroup;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    group = await RedisClusterGroup.start();
    cleanups.push(() => group.destroy());
  }, 60_000);

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });

  it("refuses a prefix without a hash tag: exit 2 from the CLI, a ConfigError from the library", async () => {
    const result = await oculus(["doctor"], { REDIS_URL: group.url, OCULUS_PREFIX: "plain" });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/prefix "plain".*must carry a hash tag.*use "\{plain\}"/);
    await expect(
      openTestQueue("redis_cluster_bad", { redisUrl: group.url, prefix: "plain" }),
    ).rejects.toThrow(ConfigError);
  });

  it("oculus doctor checks the master owning the queue's slot", async () => {
    const result = await oculus(["doctor", "--json"], { REDIS_URL: group.url });
    const report = JSON.parse(result.stdout) as {
      topology: { name: string; status: string; value: unknown }[];
    };
    const byName = new Map(report.topology.map((c) => [c.name, c]));
    const master = await group.masterPort("{oculus}:build_queue");
    expect(byName.get("master")).toMatchObject({ status: "pass", value: `127.0.0.1:${master}` });
    expect(byName.get("cluster-state")).toMatchObject({ status: "pass", value: "ok" });
    expect(byName.get("cluster-replicas")).toMatchObject({ status: "pass", value: 1 });
  });

  it("fails over to the slot's replica: nothing lost, each build once, fast path resumed on the new master", async () => {
    const prefix = `{cluster${process.pid}}`;
    const first = await openTestQueue("redis_cluster", { redisUrl: group.url, prefix });
    cleanups.push(first.cleanup);
    const second = await openTestQueue("redis_cluster", {
      redisUrl: group.url,
      schema: first.schema,
      prefix: first.prefix,
    });
    cleanups.push(second.cleanup);
    const queues: BuildQueue[] = [first.queue, second.queue];
    const logs: ModeLog[] = queues.map((q) => watchModes(q));
    expect(queues.map((q) => q.mode)).toEqual(["redis", "redis"]);
    const slotKey = `${prefix}:build_queue`;
    const oldMaster = await group.masterPort(slotKey);
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
      workerId: "cluster-worker",
      schema: first.schema,
      prefix: first.prefix,
      redisUrl: group.url,
      capacity: 2,
      // Its lease fence stops a build at 80 % of this without an acknowledged heartbeat: with 1500 a
      // loaded machine (both queues on PostgreSQL at full speed during the failover) fenced builds
      // now and then; the Redis side of the heartbeats is worker-redis-stall.test.ts's concern.
      deadAfterMs: 4000,
    });
    cleanups.push(async () => void (await worker.terminate().catch(() => undefined)));

    await until("claims before the kill", async () => load.completed.size >= 200);
    const startedBeforeKill = worker.eventsOf("started").length;
    const killedAt = Date.now();
    await group.kill9(oldMaster);
    await until("postgres mode", async () => queues.every((q) => q.mode === "postgres"));
    // The cluster promotes the slot's replica; the queues follow it without a restart.
    await group.waitHealthy(30_000, slotKey, oldMaster);
    const newMaster = await group.masterPort(slotKey);
    expect(newMaster).not.toBe(oldMaster);
    await until("redis mode on the new master", async () => queues.every((q) => q.mode === "redis"));
    const resumedAt = Date.now();
    const onPostgres = logs.map((log) => runOnPostgres(log, killedAt));
    console.log(
      `cluster failover: kill -9 to fast path resumed ${resumedAt - killedAt} ms; on PostgreSQL per queue: ${onPostgres.join(", ")} ms`,
    );

    // The fast path works on the new master: claims keep completing while in Redis mode.
    const atResume = load.completed.size;
    await until("claims on the new master", async () => load.completed.size >= atResume + 100);
    load.stopSubmits();
    await load.pauseClaims();
    const client = group.client(newMaster);
    cleanups.push(async () => client.disconnect());
    expect(parseRole(await client.info("replication"))).toBe("master");
    // The worker process's heartbeat thread beats to the new master (its Redis clock, epoch ms).
    await eventually(async () => {
      const [beat, [sec]] = await Promise.all([
        client.zscore(`${first.prefix}:worker_heartbeats`, "cluster-worker"),
        client.time(),
      ]);
      return beat !== null && Number(sec) * 1000 - Number(beat) < 2000;
    }, 15_000).catch((err: Error) => {
      throw new Error(`no fresh heartbeat on the new master: ${err.message}\n${worker.describe()}`);
    });
    // The subscribers followed: both queues' wake-ups and the event hub are subscribed on live nodes
    // (a cluster broadcasts PUBLISH to every node, so any node will do).
    await eventually(async () => {
      const counts = await group.subscribers([`${first.prefix}:wake`, `${first.prefix}:events`]);
      return (counts[0] ?? 0) >= 2 && (counts[1] ?? 0) >= 1;
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
    // The builds run by the worker process and by the in-process claimers are all the submitted
    // ones, each started once; the worker ran builds after the failover too, and is still running.
    const byWorker = worker.eventsOf("started").map((e) => e.id as string);
    console.log(
      `cluster failover: the worker process ran ${byWorker.length} builds, ${byWorker.length - startedBeforeKill} of them after the kill`,
    );
    expect(new Set([...load.claims.keys(), ...byWorker])).toEqual(load.submitted);
    const workerRan = new Set(byWorker);
    expect([...load.claims.keys()].filter((id) => workerRan.has(id))).toEqual([]);
    expect(workerRan.size).toBe(byWorker.length);
    expect(byWorker.length).toBeGreaterThan(startedBeforeKill);
    expect(worker.running).toBe(true);
    // Everything is done: the index on the new master ends empty.
    await eventually(async () => (await indexDiff(client, first.prefix, first.schema)).length === 0);
  }, 120_000);
});

function parseRole(info: string): string | undefined {
  return /^role:(\w+)/m.exec(info)?.[1];
}
