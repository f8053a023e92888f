/**
 * Routing over HTTP (issue 14), in both modes: `requires` on submit (validated: 400 naming the field,
 * nothing written), the build's `requires` and `pool` in every answer, and builds no live worker can
 * run flagged in /v1/queue and the metrics until a matching worker starts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Worker } from "../../src/index.js";
import { countBuilds, openTestApi, type TestApi } from "../helpers/api.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

describe.each(["redis", "postgres"] as const)("routing over HTTP (%s mode)", (mode) => {
  let redis: RedisServer | undefined;
  let api: TestApi;
  const workers: Worker[] = [];

  beforeAll(async () => {
    redis = mode === "redis" ? await RedisServer.start({ appendonly: false }) : undefined;
    api = await openTestApi(`http_routing_${mode}`, { queue: { redisUrl: redis?.url } });
    await eventually(async () => api.queue.mode === mode);
  });
  afterAll(async () => {
    for (const w of workers) await w.stop();
    await api?.cleanup();
    await redis?.destroy();
  });

  it("refuses bad requirements with a 400 naming the field and writes nothing", async () => {
    const before = await countBuilds(api.queue);
    const cases: [unknown, string][] = [
      [{ gpu: true }, "requires.gpu"],
      ["gpu", "requires"],
      [Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, "v"])), "requires"],
    ];
    for (const [requires, field] of cases) {
      const res = await api.inject("POST", "/v1/builds", { body: { strategyId: "s", requires } });
      expect(res.status, JSON.stringify(requires)).toBe(400);
      expect(JSON.stringify(res.json)).toContain(field);
    }
    expect(await countBuilds(api.queue)).toBe(before);
  });

  it("flags builds no live worker can run, until a matching worker starts and runs them", async () => {
    const submit = await api.inject("POST", "/v1/builds", {
      body: { strategyId: "train", requires: { gpu: "true", arch: "arm64" } },
    });
    expect(submit.status).toBe(201);
    const { build, position } = submit.json;
    expect(build).toMatchObject({ requires: { gpu: "true", arch: "arm64" } });
    expect(build.pool).toMatch(/^p[0-9a-f]{16}$/);
    expect(position).toBe(1);

    const overview = (await api.inject("GET", "/v1/queue")).json;
    expect(overview.unrunnable).toBe(1);
    expect(overview.queued).toEqual([expect.objectContaining({ unrunnable: true, position: 1 })]);
    expect(overview.pools).toContainEqual(
      expect.objectContaining({ pool: build.pool, queued: 1, workers: 0, unrunnable: true }),
    );
    const metrics = (await api.inject("GET", "/metrics")).text;
    expect(metrics).toMatch(/^oculus_unrunnable_builds 1$/m);

    // A worker without the labels changes nothing; one with them runs the build.
    const plain = new Worker(api.queue, { handler: async () => "plain" });
    workers.push(plain);
    await plain.start();
    await eventually(async () =>
      (await api.inject("GET", "/v1/queue")).json.pools.some(
        (p: { pool: string; workers: number }) => p.pool === "default" && p.workers === 1,
      ),
    );
    expect((await api.inject("GET", "/v1/queue")).json.unrunnable).toBe(1);
    const gpu = new Worker(api.queue, {
      labels: { gpu: "true", arch: "arm64", docker: "yes" },
      handler: async () => "gpu",
    });
    workers.push(gpu);
    await gpu.start();
    await eventually(
      async () => (await api.inject("GET", `/v1/builds/${build.id}`)).json.build.status === "completed",
      30_000,
    );
    const done = (await api.inject("GET", `/v1/builds/${build.id}`)).json.build;
    expect(done).toMatchObject({ workerId: gpu.id, result: "gpu" });
    expect((await api.inject("GET", "/v1/queue")).json.unrunnable).toBe(0);
  });
});
