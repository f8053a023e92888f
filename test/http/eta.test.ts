/**
 * ETAs (issue 14), in both modes: `etaSeconds` on a queued build (submit's answer, GET
 * /v1/builds/:id, /v1/queue) from the recent run times of its strategy, its position in its pool and
 * the pool's live capacity; null when no live worker can run it, and before any run time is known.
 */
import { hostname } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestApi, type TestApi } from "../helpers/api.js";
import { sql } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

describe.each(["redis", "postgres"] as const)("ETAs (%s mode)", (mode) => {
  let redis: RedisServer | undefined;
  let api: TestApi;

  beforeAll(async () => {
    redis = mode === "redis" ? await RedisServer.start({ appendonly: false }) : undefined;
    api = await openTestApi(`http_eta_${mode}`, { queue: { redisUrl: redis?.url } });
    await eventually(async () => api.queue.mode === mode);
  });
  afterAll(async () => {
    await api?.cleanup();
    await redis?.destroy();
  });

  it("is null before any build completed, and when no live worker can run the build", async () => {
    const first = await api.inject("POST", "/v1/builds", { body: { strategyId: "first" } });
    expect(first.json).toMatchObject({ position: 1, etaSeconds: null });
    const gpu = await api.inject("POST", "/v1/builds", {
      body: { strategyId: "first", requires: { gpu: "true" } },
    });
    expect(gpu.json.etaSeconds).toBeNull();
    await api.queue.remove(first.json.build.id);
    await api.queue.remove(gpu.json.build.id);
  });

  it("counts the builds ahead in its pool, the pool's free slots and capacity, and the strategy's run time", async () => {
    // History: three completed runs of 60 s each.
    const done = await api.queue.submitMany([0, 1, 2].map(() => ({ strategyId: "eta" })));
    const claimed = await api.queue.claim("history", 3);
    for (const b of claimed) await api.queue.complete(b.id, b.lease);
    const { schema } = api.queue.config;
    await sql(
      schema,
      "UPDATE builds SET started_at = finished_at - interval '60 seconds' WHERE id = ANY($1::uuid[])",
      [done.map((d) => d.build.id)],
    );
    // A live worker with two free slots that does not claim (so the queue stands still).
    await api.queue.workers.register({
      id: "idle-2-slots",
      hostname: hostname(),
      pid: process.pid,
      capacity: 2,
      labels: {},
      version: "test",
    });

    const submitted: { build: { id: string } }[] = [];
    for (let i = 0; i < 5; i++) {
      submitted.push((await api.inject("POST", "/v1/builds", { body: { strategyId: "eta" } })).json);
    }
    // Positions 1..5 with 2 free slots of 2, 60 s a run: (position - 2) * 60 / 2.
    const expected = [0, 0, 30, 60, 90];
    const etas = await eventually(async () => {
      const read = await Promise.all(
        submitted.map(async (s) => (await api.inject("GET", `/v1/builds/${s.build.id}`)).json),
      );
      return read.every((r) => r.etaSeconds !== null) ? read : undefined;
    });
    expect(etas.map((r) => r.position)).toEqual([1, 2, 3, 4, 5]);
    expect(etas.map((r) => r.etaSeconds)).toEqual(expected);
    const queue = (await api.inject("GET", "/v1/queue")).json;
    expect(queue.queued.map((q: { etaSeconds: number | null }) => q.etaSeconds)).toEqual(expected);
    expect(queue.pools).toContainEqual(
      expect.objectContaining({ pool: "default", workers: 1, capacity: 2, freeSlots: 2 }),
    );
  });
});
