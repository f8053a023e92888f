/**
 * Concurrency keys over HTTP (issue 14), in both modes: the limits routes (GET /v1/limits,
 * GET and PUT /v1/limits/:key) with bad input refused (400 naming the field, nothing changed), a
 * build's concurrencyKey, held and waitingOn in the answers and in /v1/queue, supersede on submit,
 * and the waiting-on-a-limit gauge.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestApi, type TestApi } from "../helpers/api.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

describe.each(["redis", "postgres"] as const)("concurrency limits over HTTP (%s mode)", (mode) => {
  let redis: RedisServer | undefined;
  let api: TestApi;

  beforeAll(async () => {
    redis = mode === "redis" ? await RedisServer.start({ appendonly: false }) : undefined;
    api = await openTestApi(`http_limits_${mode}`, { queue: { redisUrl: redis?.url } });
    await eventually(async () => api.queue.mode === mode);
  });
  afterAll(async () => {
    await api?.cleanup();
    await redis?.destroy();
  });

  it("sets, reads and lists limits; a key never seen has the default limit 1", async () => {
    const unseen = await api.inject("GET", "/v1/limits/never-seen");
    expect(unseen.status).toBe(200);
    expect(unseen.json.limit).toEqual({
      key: "never-seen",
      limit: 1,
      running: 0,
      admitted: 0,
      waiting: 0,
      updatedAt: null,
    });
    const set = await api.inject("PUT", "/v1/limits/deploy%2Fprod%20eu", { body: { limit: 3 } });
    expect(set.status).toBe(200);
    expect(set.json.limit).toMatchObject({ key: "deploy/prod eu", limit: 3, running: 0 });
    await api.inject("PUT", "/v1/limits/alpha", { body: { limit: 2 } });
    const list = await api.inject("GET", "/v1/limits");
    expect(list.status).toBe(200);
    expect(list.json.limits.map((l: { key: string }) => l.key)).toEqual(["alpha", "deploy/prod eu"]);
    const page = await api.inject("GET", "/v1/limits?limit=1");
    expect(page.json.nextAfter).toBe("alpha");
    // The longest key a submit accepts can be set too (200 characters, here encoded to 1,800).
    const longest = "\u00e9\u4e2d".repeat(100);
    const long = await api.inject("PUT", `/v1/limits/${encodeURIComponent(longest)}`, { body: { limit: 4 } });
    expect(long.status).toBe(200);
    expect(long.json.limit).toMatchObject({ key: longest, limit: 4 });
    const next = await api.inject("GET", "/v1/limits?limit=1&after=alpha");
    expect(next.json.limits.map((l: { key: string }) => l.key)).toEqual(["deploy/prod eu"]);
  });

  it("refuses bad limits and keys with a 400 naming the field, and changes nothing", async () => {
    await api.inject("PUT", "/v1/limits/steady", { body: { limit: 2 } });
    const cases: [string, unknown, string][] = [
      ["/v1/limits/steady", { limit: 0 }, "limit"],
      ["/v1/limits/steady", { limit: -2 }, "limit"],
      ["/v1/limits/steady", { limit: 1.5 }, "limit"],
      ["/v1/limits/steady", { limit: "3" }, "limit"],
      ["/v1/limits/steady", {}, "limit"],
      ["/v1/limits/steady", { limit: 2, extra: 1 }, "extra"],
      [`/v1/limits/${"k".repeat(201)}`, { limit: 2 }, "key"],
      ["/v1/limits/bad%07key", { limit: 2 }, "key"],
      ["/v1/limits/bad%0Akey", { limit: 2 }, "key"],
    ];
    for (const [path, body, field] of cases) {
      const res = await api.inject("PUT", path, { body });
      expect(res.status, `${path} ${JSON.stringify(body)}`).toBe(400);
      expect(res.json.error.field, `${path} ${JSON.stringify(body)}`).toBe(field);
    }
    expect((await api.inject("GET", "/v1/limits/steady")).json.limit.limit).toBe(2);
    const listed = (await api.inject("GET", "/v1/limits")).json.limits.map((l: { key: string }) => l.key);
    expect(listed).not.toContain("bad\u0007key");
    const badSubmit = await api.inject("POST", "/v1/builds", {
      body: { strategyId: "s", concurrencyKey: "a\u0001" },
    });
    expect(badSubmit.status).toBe(400);
    expect(badSubmit.json.error.field).toBe("concurrencyKey");
    const badList = await api.inject("GET", "/v1/limits?limit=0");
    expect(badList.status).toBe(400);
    expect(badList.json.error.field).toBe("limit");
  });

  it("shows a build waiting on its key's limit, and a raised limit admits it", async () => {
    const key = `http-${mode}`;
    const first = await api.inject("POST", "/v1/builds", {
      body: { strategyId: "deploy", concurrencyKey: key },
    });
    expect(first.status).toBe(201);
    expect(first.json.build).toMatchObject({ concurrencyKey: key, held: false });
    expect(first.json.waitingOn).toBeNull();
    const [claimed] = await api.queue.claim("w1", 1);
    expect(claimed?.id).toBe(first.json.build.id);
    const second = await api.inject("POST", "/v1/builds", {
      body: { strategyId: "deploy", concurrencyKey: key },
    });
    expect(second.json.build.held).toBe(true);
    expect(second.json.position).toBeNull();
    expect(second.json.waitingOn).toEqual({ concurrencyKey: key, running: 1, limit: 1 });
    const status = await api.inject("GET", `/v1/builds/${second.json.build.id}`);
    expect(status.json.waitingOn).toEqual({ concurrencyKey: key, running: 1, limit: 1 });
    const overview = (await api.inject("GET", "/v1/queue")).json;
    expect(overview.waitingOnLimit).toBe(1);
    expect(overview.queued).toContainEqual(
      expect.objectContaining({ waitingOn: { concurrencyKey: key, running: 1, limit: 1 }, position: null }),
    );
    const metrics = (await api.inject("GET", "/metrics")).text;
    expect(metrics).toMatch(/^oculus_builds_waiting_on_concurrency_limit 1$/m);

    const raised = await api.inject("PUT", `/v1/limits/${key}`, { body: { limit: 2 } });
    expect(raised.json.limit).toMatchObject({ limit: 2, running: 1, admitted: 1, waiting: 0 });
    const after = await api.inject("GET", `/v1/builds/${second.json.build.id}`);
    expect(after.json).toMatchObject({ waitingOn: null, position: 1, build: { held: false } });
    const [next] = await api.queue.claim("w1", 1);
    expect(next?.id).toBe(second.json.build.id);
  });

  it("supersede: true stops the strategy's queued builds and names them", async () => {
    const old = await api.inject("POST", "/v1/builds", { body: { strategyId: "site" } });
    const newer = await api.inject("POST", "/v1/builds", { body: { strategyId: "site", supersede: true } });
    expect(newer.status).toBe(201);
    expect(newer.json.superseded).toEqual([old.json.build.id]);
    const stopped = await api.inject("GET", `/v1/builds/${old.json.build.id}`);
    expect(stopped.json.build).toMatchObject({
      status: "stopped",
      stopReason: `superseded by ${newer.json.build.id}`,
    });
    const bad = await api.inject("POST", "/v1/builds", { body: { strategyId: "site", supersede: "yes" } });
    expect(bad.status).toBe(400);
    expect(bad.json.error.field).toBe("supersede");
  });
});

describe("concurrency limits: scopes", () => {
  const READ = "limits-reader-token-0123456789";
  const ADMIN = "limits-admin-token-0123456789";
  let api: TestApi;

  beforeAll(async () => {
    api = await openTestApi("http_limits_scopes", {
      tokens: [
        { name: "reader", token: READ, scopes: ["read"] },
        { name: "ops", token: ADMIN, scopes: ["admin"] },
      ],
    });
  });
  afterAll(async () => {
    await api?.cleanup();
  });

  it("are in the OpenAPI document with their schemas", async () => {
    const doc = (await api.inject("GET", "/openapi.json")).json;
    const put = doc.paths["/v1/limits/{key}"].put;
    expect(put.requestBody.content["application/json"].schema.required).toEqual(["limit"]);
    expect(put.parameters.map((p: { name: string; in: string }) => [p.name, p.in])).toEqual([
      ["key", "path"],
    ]);
    expect(put.security).toEqual([{ bearerAuth: [] }]);
    expect(Object.keys(doc.paths["/v1/limits"].get.responses)).toEqual(
      expect.arrayContaining(["200", "400"]),
    );
    const submit = doc.paths["/v1/builds"].post.requestBody.content["application/json"].schema.properties;
    expect(Object.keys(submit)).toEqual(expect.arrayContaining(["concurrencyKey", "supersede"]));
  });

  it("reading needs read, setting needs admin", async () => {
    expect((await api.inject("GET", "/v1/limits", { token: READ })).status).toBe(200);
    expect((await api.inject("GET", "/v1/limits/k", { token: READ })).status).toBe(200);
    const refused = await api.inject("PUT", "/v1/limits/k", { token: READ, body: { limit: 5 } });
    expect(refused.status).toBe(403);
    expect((await api.inject("GET", "/v1/limits/k", { token: READ })).json.limit.limit).toBe(1);
    expect((await api.inject("PUT", "/v1/limits/k", { body: { limit: 5 } })).status).toBe(401);
    const set = await api.inject("PUT", "/v1/limits/k", { token: ADMIN, body: { limit: 5 } });
    expect(set.status).toBe(200);
    expect(set.json.limit.limit).toBe(5);
  });
});
