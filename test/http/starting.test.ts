/**
 * The API before its queue is open (`oculus up` binds first, then waits for PostgreSQL): /health
 * 503 `unavailable` with `starting: true`, every store route 503 `store_unavailable` with Retry-After,
 * auth and validation answering as usual, the docs and dashboard served; once the queue is filled
 * in, the real routes answer. In-process (`inject`), with a real queue on the test PostgreSQL.
 */
import { afterAll, describe, expect, it } from "vitest";
import { authConfig } from "../../src/http/auth.js";
import { buildServer, PendingQueue } from "../../src/http/server.js";
import type { BuildQueue } from "../../src/index.js";
import { captureLogs } from "../helpers/api.js";
import { openTestQueue } from "../helpers/queue.js";

describe("the API while the queue is not open", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of cleanups) await c();
  });

  it("answers 503 until the queue is filled in, then serves it", async () => {
    const pending = new PendingQueue(true);
    const tokens = authConfig([{ name: "ci", token: "t0ken-for-the-starting-test", scopes: ["admin"] }]);
    const app = buildServer(pending, { auth: tokens, logger: captureLogs().logger, rateLimit: false });
    cleanups.push(() => app.close());
    const call = async (method: "GET" | "POST", url: string, body?: unknown, token = true) => {
      const res = await app.inject({
        method,
        url,
        headers: {
          ...(token ? { authorization: "Bearer t0ken-for-the-starting-test" } : {}),
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        payload: body === undefined ? undefined : JSON.stringify(body),
      });
      return {
        status: res.statusCode,
        headers: res.headers,
        json: res.body ? JSON.parse(res.body) : undefined,
      };
    };

    const health = await call("GET", "/health", undefined, false);
    expect(health.status).toBe(503);
    expect(health.json).toEqual({
      status: "unavailable",
      starting: true,
      mode: "postgres",
      postgres: { status: "down" },
      redis: { status: "unavailable" },
      persistence: null,
    });
    for (const [method, url] of [
      ["POST", "/v1/builds"],
      ["GET", "/v1/builds"],
      ["GET", "/v1/builds/00000000-0000-0000-0000-000000000000"],
      ["GET", "/v1/queue"],
      ["GET", "/v1/workers"],
      ["GET", "/metrics"],
    ] as const) {
      const res = await call(method, url, method === "POST" ? { strategyId: "s" } : undefined);
      expect(res.status, `${method} ${url}`).toBe(503);
      expect(res.headers["retry-after"], `${method} ${url}`).toBe("1");
      expect(res.json.error.code, `${method} ${url}`).toBe("store_unavailable");
    }
    // What does not need the store answers as usual: auth, validation, the docs and the dashboard.
    expect((await call("POST", "/v1/builds", { strategyId: "s" }, false)).status).toBe(401);
    expect((await call("POST", "/v1/builds", { priority: "high" })).status).toBe(400);
    expect((await call("GET", "/openapi.json", undefined, false)).status).toBe(200);
    expect((await app.inject({ method: "GET", url: "/" })).statusCode).toBe(200);

    const { queue, cleanup } = await openTestQueue("starting_api");
    cleanups.unshift(cleanup);
    pending.fill(queue as BuildQueue);
    const healthy = await call("GET", "/health", undefined, false);
    expect(healthy.status).toBe(200);
    expect(healthy.json.starting).toBeUndefined();
    const submitted = await call("POST", "/v1/builds", { strategyId: "after-open" });
    expect(submitted.status).toBe(201);
    expect((await call("GET", `/v1/builds/${submitted.json.build.id}`)).json.build.strategyId).toBe(
      "after-open",
    );
    const metrics = await app.inject({
      method: "GET",
      url: "/metrics",
      headers: { authorization: "Bearer t0ken-for-the-starting-test" },
    });
    expect(metrics.statusCode).toBe(200);
    expect(metrics.body).toContain("oculus_queue_length");
  });
});
