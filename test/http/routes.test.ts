/**
 * Every route of the HTTP API, in-process (Fastify's inject) and over a real socket (listen on port 0
 * + fetch), against a real queue: the test PostgreSQL and a private redis-server.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Worker } from "../../src/index.js";
import { type Caller, openTestApi, type TestApi } from "../helpers/api.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const UNKNOWN_ID = "00000000-0000-4000-8000-000000000000";

let redis: RedisServer;
let api: TestApi;
let worker: Worker;

beforeAll(async () => {
  redis = await RedisServer.start({ appendonly: false });
  api = await openTestApi("http_routes", { queue: { redisUrl: redis.url } });
  await eventually(async () => api.queue.mode === "redis");
  // A worker that holds each build it claims until the build is stopped (or the worker stops).
  worker = new Worker(api.queue, {
    drainMs: 0,
    handler: async ({ progress, signal }) => {
      await progress({ phase: "training", percent: 40 });
      await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
      signal.throwIfAborted();
    },
  });
});

afterAll(async () => {
  await worker?.stop();
  await api?.cleanup();
  await redis?.destroy();
});

describe.each(["inject", "fetch"] as const)("every route via %s", (transport) => {
  const call: Caller = (method, url, options) => api[transport](method, url, options);
  const strategy = `routes-${transport}`;

  it("POST /v1/builds: 201 with the build and its position; the same idempotency key: 200, same build", async () => {
    const body = {
      strategyId: strategy,
      priority: 7,
      params: { lr: 0.01 },
      idempotencyKey: `key-${transport}`,
    };
    const first = await call("POST", "/v1/builds", { body });
    expect(first.status).toBe(201);
    expect(first.json.build).toMatchObject({
      strategyId: strategy,
      priority: 7,
      status: "queued",
      params: body.params,
    });
    expect(first.json.position).toBe(1);
    expect(first.headers["x-request-id"]).toBeTruthy();
    const again = await call("POST", "/v1/builds", { body });
    expect(again.status).toBe(200);
    expect(again.json.build.id).toBe(first.json.build.id);
    await api.queue.stop(first.json.build.id); // out of the way of the next tests
  });

  it("GET /v1/builds/:id: the build with status, position, times; 404 for an unknown id", async () => {
    const { build } = await api.queue.submit({ strategyId: strategy, priority: 1000 });
    const res = await call("GET", `/v1/builds/${build.id}`);
    expect(res.status).toBe(200);
    expect(res.json.position).toBe(1);
    expect(res.json.build).toMatchObject({
      id: build.id,
      status: "queued",
      phase: null,
      progress: null,
      workerId: null,
      retryCount: 0,
      maxRetries: 3,
      logTail: null,
    });
    expect(new Date(res.json.build.createdAt).getTime()).toBe(build.createdAt.getTime());
    expect(res.json.build).not.toHaveProperty("lease");
    await api.queue.stop(build.id);
    const stopped = await call("GET", `/v1/builds/${build.id}`);
    expect(stopped.json).toMatchObject({ build: { status: "stopped" }, position: null });
    const missing = await call("GET", `/v1/builds/${UNKNOWN_ID}`);
    expect(missing.status).toBe(404);
    expect(missing.json.error.code).toBe("not_found");
  });

  it("GET /v1/builds: filters by status and strategy, pages with a cursor", async () => {
    const listed = `list-${transport}`;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await api.queue.submit({ strategyId: listed })).build.id);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const query: string = `strategyId=${listed}&status=queued&limit=2${cursor ? `&cursor=${cursor}` : ""}`;
      const res = await call("GET", `/v1/builds?${query}`);
      expect(res.status).toBe(200);
      expect(res.json.builds.length).toBeLessThanOrEqual(2);
      seen.push(...res.json.builds.map((b: { id: string }) => b.id));
      cursor = res.json.nextCursor;
    } while (cursor);
    expect(seen).toEqual([...ids].reverse()); // newest first, each once
    const none = await call("GET", `/v1/builds?strategyId=${listed}&status=running`);
    expect(none.json).toEqual({ builds: [], nextCursor: null });
    for (const id of ids) await api.queue.stop(id);
  });

  it("POST /v1/builds/:id/stop: 202 and stopped (with the reason); a finished build: 409", async () => {
    const { build } = await api.queue.submit({ strategyId: strategy });
    const res = await call("POST", `/v1/builds/${build.id}/stop`, { body: { reason: "superseded" } });
    expect(res.status).toBe(202);
    expect(res.json.build).toMatchObject({
      id: build.id,
      status: "stopped",
      stopReason: "superseded",
      stoppedBy: "api",
    });
    // No body: without tokens, the client header says it is not a cross-site form (open-mode.ts).
    const again = await call("POST", `/v1/builds/${build.id}/stop`, {
      headers: { "x-oculus-client": "test" },
    });
    expect(again.status).toBe(409);
    expect(again.json.error.code).toBe("invalid_state");
  });

  it("POST /v1/builds/:id/retry: a stopped build is queued again (202); a queued one: 409", async () => {
    const { build } = await api.queue.submit({ strategyId: strategy });
    await api.queue.stop(build.id);
    const res = await call("POST", `/v1/builds/${build.id}/retry`, {
      headers: { "x-oculus-client": "test" },
    });
    expect(res.status).toBe(202);
    expect(res.json.build).toMatchObject({ id: build.id, status: "queued", retryCount: 0 });
    const again = await call("POST", `/v1/builds/${build.id}/retry`, { body: {} });
    expect(again.status).toBe(409);
    expect(again.json.error.code).toBe("invalid_state");
    await api.queue.stop(build.id);
  });

  it("GET /v1/builds/:id/events of a finished build: its snapshot, then the stream ends", async () => {
    const { build } = await api.queue.submit({ strategyId: strategy });
    await api.queue.stop(build.id);
    const res = await call("GET", `/v1/builds/${build.id}/events`);
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^text\/event-stream/);
    expect(res.text).toMatch(/^id: \d+\nevent: snapshot\ndata: \{.*"status":"stopped"/m);
    const unknown = await call("GET", `/v1/builds/${UNKNOWN_ID}/events`);
    expect(unknown.status).toBe(404);
  });
});

describe("the overview routes", () => {
  let held: string;

  beforeAll(async () => {
    // Queue one build for the worker, wait until it runs (held), then queue two more behind it.
    held = (await api.queue.submit({ strategyId: "overview-held", priority: 1000 })).build.id;
    await worker.start();
    await eventually(async () => (await api.queue.get(held)).progress?.phase === "training");
    await api.queue.submit({ strategyId: "overview-a", priority: 10 });
    await api.queue.submit({ strategyId: "overview-b", priority: 5 });
  });

  it.each(["inject", "fetch"] as const)(
    "GET /v1/queue via %s: length, queued with positions, active, workers, mode",
    async (transport) => {
      const res = await api[transport]("GET", "/v1/queue?limit=5");
      expect(res.status).toBe(200);
      expect(res.json.mode).toBe("redis");
      expect(res.json.length).toBeGreaterThanOrEqual(2);
      const queued = res.json.queued as { build: { strategyId: string }; position: number }[];
      expect(queued.slice(0, 2).map((q) => [q.build.strategyId, q.position])).toEqual([
        ["overview-a", 1],
        ["overview-b", 2],
      ]);
      const active = res.json.active.find((b: { id: string }) => b.id === held);
      expect(active).toMatchObject({ status: "running", phase: "training", progress: { percent: 40 } });
      expect(res.json.workers).toContainEqual(
        expect.objectContaining({
          id: worker.id,
          status: "active",
          capacity: 1,
          activeBuilds: 1,
          freeSlots: 0,
        }),
      );
    },
  );

  it.each(["inject", "fetch"] as const)("GET /v1/workers via %s", async (transport) => {
    const res = await api[transport]("GET", "/v1/workers");
    expect(res.status).toBe(200);
    expect(res.json.workers).toContainEqual(expect.objectContaining({ id: worker.id, capacity: 1 }));
    const stopped = await api[transport]("GET", "/v1/workers?status=stopped");
    expect(stopped.json.workers.map((w: { id: string }) => w.id)).not.toContain(worker.id);
  });

  it.each(["inject", "fetch"] as const)(
    "GET /health via %s: PostgreSQL up, Redis up, mode",
    async (transport) => {
      const res = await api[transport]("GET", "/health");
      expect(res.status).toBe(200);
      expect(res.json).toMatchObject({
        status: "ok",
        mode: "redis",
        postgres: { status: "up" },
        redis: { status: "up" },
      });
    },
  );

  it.each(["inject", "fetch"] as const)(
    "GET /metrics via %s: Prometheus text with the queue's numbers",
    async (transport) => {
      const res = await api[transport]("GET", "/metrics");
      expect(res.status).toBe(200);
      expect(res.headers["content-type"]).toMatch(/^text\/plain/);
      expect(res.text).toMatch(/^oculus_queue_length \d+$/m);
      expect(res.text).toMatch(/^oculus_builds\{status="running"\} [1-9]\d*$/m);
      expect(res.text).toMatch(/^oculus_workers\{status="active"\} [1-9]\d*$/m);
      expect(res.text).toMatch(/^oculus_queue_mode\{mode="redis"\} 1$/m);
      // The worker claimed through this queue: both histograms saw it.
      expect(res.text).toMatch(/^oculus_claim_duration_seconds_count [1-9]\d*$/m);
      expect(res.text).toMatch(/^oculus_dispatch_latency_seconds_count [1-9]\d*$/m);
    },
  );

  it.each(["inject", "fetch"] as const)("GET /openapi.json and /docs via %s", async (transport) => {
    const doc = await api[transport]("GET", "/openapi.json");
    expect(doc.status).toBe(200);
    expect(doc.json.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.json.paths).sort()).toEqual([
      "/health",
      "/metrics",
      "/v1/builds",
      "/v1/builds/{id}",
      "/v1/builds/{id}/events",
      "/v1/builds/{id}/logs",
      "/v1/builds/{id}/logs/stream",
      "/v1/builds/{id}/retry",
      "/v1/builds/{id}/stop",
      "/v1/events",
      "/v1/limits",
      "/v1/limits/{key}",
      "/v1/queue",
      "/v1/schedules",
      "/v1/schedules/{name}",
      "/v1/schedules/{name}/pause",
      "/v1/schedules/{name}/resume",
      "/v1/stats/history",
      "/v1/workers",
    ]);
    const logs = doc.json.paths["/v1/builds/{id}/logs"].get;
    expect(Object.keys(logs.responses)).toEqual(expect.arrayContaining(["200", "206", "416", "404"]));
    expect(logs.parameters.map((p: { name: string }) => p.name)).toContain("offset");
    expect(logs.security).toEqual([{ bearerAuth: [] }]);
    expect(doc.json.paths["/v1/builds"].post.requestBody.content["application/json"].schema.required).toEqual(
      ["strategyId"],
    );
    const ui = await api[transport]("GET", "/docs");
    expect(ui.status).toBe(200);
    expect(ui.text).toContain("swagger-ui");
    // The UI's assets are served by this server (it works offline).
    const asset = await api[transport]("GET", "/docs/static/swagger-ui-bundle.js");
    expect(asset.status).toBe(200);
  });

  it("a stopped running build goes through stopping, and the worker's handler ends", async () => {
    const res = await api.fetch("POST", `/v1/builds/${held}/stop`, { body: { reason: "test over" } });
    expect(res.status).toBe(202);
    expect(["stopping", "stopped"]).toContain(res.json.build.status);
    await eventually(async () => (await api.queue.get(held)).status === "stopped");
  });
});
