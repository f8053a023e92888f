/**
 * A worker whose Redis stops answering (a black-holed link: every command waits for its 2 s timeout,
 * as during a Cluster or Sentinel failover) while it runs a build. Its heartbeat thread must keep
 * beating to PostgreSQL meanwhile: the PostgreSQL heartbeat extends the build's lease and is what the
 * lease fence measures. When it waited on the Redis heartbeat first, every beat was held 2 s, the
 * fence (80 % of deadAfterMs) stopped the build and it ran a second time (seen in the Cluster
 * failover test with a worker process). Here the build runs once, under its first lease.
 */
import { afterAll, describe, expect, it } from "vitest";
import { useFileFixture } from "../helpers/file-fixture.js";
import { openTestQueue } from "../helpers/queue.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";
import {
  buildEvents,
  completedBy,
  killAllWorkers,
  progressAtLeast,
  WorkerProcess,
} from "../helpers/worker-fleet.js";

const fixture = useFileFixture({ appendonly: false }, killAllWorkers);
afterAll(killAllWorkers);

/** deadAfterMs 2000: the fence stops a build 1600 ms after the last acknowledged heartbeat. */
const HEALTH = { heartbeatMs: 200, deadAfterMs: 2000 };
/** How long the worker's Redis link stays black-holed: two command timeouts and more. */
const STALL_MS = 5000;

describe("a worker's Redis link black-holed while it runs a build", () => {
  it("keeps heartbeating to PostgreSQL: the build is not fenced and runs once, under its first lease", async () => {
    const proxy = await TcpProxy.start(fixture.server.port);
    fixture.defer(() => proxy.close());
    const opened = await openTestQueue("worker_redis_stall", {
      redisUrl: fixture.server.url,
      health: HEALTH,
    });
    fixture.defer(opened.cleanup);
    const worker = await WorkerProcess.start({
      workerId: "stalled-redis",
      schema: opened.schema,
      prefix: opened.prefix,
      redisUrl: `redis://127.0.0.1:${proxy.port}`,
      ...HEALTH,
    });
    fixture.defer(async () => void (await worker.terminate().catch(() => undefined)));

    // About 8 s of steps: it is still running when the link comes back.
    const { build } = await opened.queue.submit({ strategyId: "stall", params: { steps: 80, stepMs: 100 } });
    await progressAtLeast(opened.schema, build.id, 3);
    proxy.blackhole();
    await new Promise((r) => setTimeout(r, STALL_MS));
    proxy.heal();

    const record = await completedBy(worker, opened.schema, build.id);
    const events = await buildEvents(opened.schema, build.id);
    expect(events.map((e) => e.type)).toEqual(["submitted", "claimed", "completed"]);
    expect(record.lease).toBe(1);
    expect(worker.eventsOf("started", build.id)).toHaveLength(1);
    expect(worker.eventsOf("abandoned", build.id)).toEqual([]);
    expect(worker.eventsOf("signal-aborted", build.id)).toEqual([]);
    expect(worker.running).toBe(true);
  }, 90_000);
});
