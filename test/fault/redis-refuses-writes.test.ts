/**
 * A Redis that answers but refuses writes (issue 16): out of memory under `noeviction`, and a
 * READONLY replica. Run as operators do, `oculus up --workers 0` plus separate `oculus worker`
 * processes, builds submitted over HTTP. Every process must fail over to PostgreSQL (the workers too:
 * an empty pop is not refused, but their claims' write to Redis is), builds keep being claimed and
 * completed, and once the fault is lifted every process returns to Redis after a reconcile, with an
 * index equal to the queued rows. Repeated probe failures are logged rate-limited.
 */
import type { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { indexDiff } from "../helpers/index-state.js";
import { type OculusFleet, startOculusFleet } from "../helpers/oculus-fleet.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

const WORKERS = 2;
const RESUMED = "fast path resumed";
const FAILED_OVER = "Redis unavailable";

interface Fault {
  apply(client: Redis): Promise<void>;
  lift(client: Redis): Promise<void>;
}

/** Fills memory, then sets maxmemory below what is used: every write that may grow memory is refused. */
const outOfMemory: Fault = {
  async apply(client) {
    await client.config("SET", "maxmemory-policy", "noeviction");
    for (let i = 0; i < 20; i++) await client.set(`filler:${i}`, "x".repeat(100_000));
    const info = await client.info("memory");
    const used = Number(/used_memory:(\d+)/.exec(info)?.[1]);
    await client.config("SET", "maxmemory", String(used - 512 * 1024));
    await expect(client.set("refused?", "1")).rejects.toThrow(/OOM/);
  },
  async lift(client) {
    await client.config("SET", "maxmemory", "0");
    await client.del(...Array.from({ length: 20 }, (_, i) => `filler:${i}`));
  },
};

/** Makes the server a replica of another (empty) one, as an old master back after a promotion. */
function readOnlyReplica(): Fault {
  let primary: RedisServer | undefined;
  return {
    async apply(client) {
      primary = await RedisServer.start({ appendonly: false });
      cleanups.push(() => (primary as RedisServer).destroy());
      await client.replicaof("127.0.0.1", primary.port);
      await eventually(async () => /master_link_status:up/.test(await client.info("replication")), 30_000);
      await expect(client.set("refused?", "1")).rejects.toThrow(/READONLY/);
    },
    async lift(client) {
      await client.replicaof("NO", "ONE");
    },
  };
}

async function waitCompleted(fleet: OculusFleet, ids: string[], timeoutMs = 60_000): Promise<void> {
  await eventually(async () => {
    for (const id of ids) if ((await fleet.build(id)).status !== "completed") return false;
    return true;
  }, timeoutMs).catch((err: Error) => {
    throw new Error(`${err.message}\nAPI:\n${fleet.api.output().slice(-3000)}`);
  });
}

async function runScenario(label: string, fault: Fault): Promise<void> {
  const server = await RedisServer.start({ appendonly: false });
  cleanups.push(() => server.destroy());
  const client = server.client();
  cleanups.push(async () => client.disconnect());
  const fleet = await startOculusFleet(label, server.url, WORKERS);
  cleanups.push(() => fleet.stop());

  // Every process (the API and each worker) is on the Redis path, and builds run.
  await eventually(async () => fleet.logged(RESUMED).every((n) => n >= 1), 60_000);
  const warmUp = await Promise.all([1, 2, 3].map(() => fleet.submit()));
  await waitCompleted(
    fleet,
    warmUp.map((s) => s.id),
  );

  await fault.apply(client);
  const faultAt = Date.now();
  // Builds keep coming in over HTTP during the fault.
  const during: { id: string; at: number }[] = [];
  for (let i = 0; i < 20; i++) {
    const { id } = await fleet.submit();
    during.push({ id, at: Date.now() });
    await new Promise((r) => setTimeout(r, 150));
  }
  await waitCompleted(
    fleet,
    during.map((d) => d.id),
  );
  const first = await fleet.build(during[0]?.id as string);
  const recoveryMs = new Date(first.startedAt as string).getTime() - faultAt;
  console.log(`${label}: fault -> first build submitted after it running: ${recoveryMs} ms`);
  // Every process, the workers included, went over to PostgreSQL, and said so once: no flapping back
  // to Redis and out again while the fault lasts (it logged that twice a second per process).
  const failovers = fleet.logged(FAILED_OVER);
  console.log(`${label}: "Redis unavailable" lines per process: ${failovers.join(", ")}`);
  for (const n of failovers) expect(n).toBe(1);
  expect(await fleet.mode()).toBe("postgres");

  await fault.lift(client);
  await eventually(async () => fleet.logged(RESUMED).every((n) => n >= 2), 90_000).catch((err: Error) => {
    throw new Error(
      `${err.message}: resumed ${fleet.logged(RESUMED)}\n${fleet.workers[0]?.output().slice(-3000)}`,
    );
  });
  expect(await fleet.mode()).toBe("redis");
  const after = await Promise.all([1, 2, 3].map(() => fleet.submit()));
  await waitCompleted(
    fleet,
    after.map((s) => s.id),
  );
  expect(await indexDiff(client, fleet.prefix, fleet.schema)).toEqual([]);
  // The failed probes were logged rate-limited: the first, then at most one per 30 s.
  const probeWarnings = fleet.logged("Redis probe failed");
  console.log(`${label}: probe warnings per process: ${probeWarnings.join(", ")}`);
  for (const n of probeWarnings) expect(n).toBeLessThanOrEqual(3);
}

describe("a Redis that answers but refuses writes", () => {
  it("out of memory (maxmemory, noeviction): builds keep running on PostgreSQL, then back to Redis", async () => {
    await runScenario("redis_oom", outOfMemory);
  }, 240_000);

  it("a READONLY replica: builds keep running on PostgreSQL, then back to Redis", async () => {
    await runScenario("redis_readonly", readOnlyReplica());
  }, 240_000);
});
