/**
 * Malformed requests: each gets its 4xx with `{error: {code, message, field?}}`, no internals, and
 * creates nothing (the number of builds is the same before and after). Plus unknown routes, an
 * internal error (500, generic message with the request id, details only in the log) and request ids.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_PARAMS_BYTES } from "../../src/index.js";
import { type CallOptions, countBuilds, openTestApi, type TestApi } from "../helpers/api.js";

const UNKNOWN_ID = "00000000-0000-4000-8000-000000000000";

let api: TestApi;
let queuedId: string;

beforeAll(async () => {
  api = await openTestApi("http_malformed", {
    // A route that fails the way a bug would, to see what an internal error looks like.
    setup: (app) =>
      app.get("/v1/test-bug", { config: { access: "read" } }, async () => {
        throw new Error("secret internals: password=hunter2 at /srv/oculus/db.ts:12");
      }),
  });
  queuedId = (await api.queue.submit({ strategyId: "malformed-existing" })).build.id;
});

afterAll(async () => {
  await api?.cleanup();
});

interface Case {
  name: string;
  method: string;
  url: string;
  options?: CallOptions;
  status: number;
  code: string;
  field?: string;
}

const big = "x".repeat(2 * 1024 * 1024);

const cases: Case[] = [
  // POST /v1/builds bodies
  {
    name: "bad JSON",
    method: "POST",
    url: "/v1/builds",
    options: { rawBody: '{"strategyId": ' },
    status: 400,
    code: "invalid_input",
  },
  {
    name: "empty JSON body",
    method: "POST",
    url: "/v1/builds",
    options: { rawBody: "" },
    status: 400,
    code: "invalid_input",
  },
  {
    name: "JSON null body",
    method: "POST",
    url: "/v1/builds",
    options: { rawBody: "null" },
    status: 400,
    code: "invalid_input",
  },
  {
    name: "array body",
    method: "POST",
    url: "/v1/builds",
    options: { body: [{ strategyId: "a" }] },
    status: 400,
    code: "invalid_input",
  },
  {
    name: "missing strategyId",
    method: "POST",
    url: "/v1/builds",
    options: { body: { priority: 1 } },
    status: 400,
    code: "invalid_input",
    field: "strategyId",
  },
  {
    name: "strategyId a number",
    method: "POST",
    url: "/v1/builds",
    options: { body: { strategyId: 5 } },
    status: 400,
    code: "invalid_input",
    field: "strategyId",
  },
  {
    name: "empty strategyId",
    method: "POST",
    url: "/v1/builds",
    options: { body: { strategyId: "" } },
    status: 400,
    code: "invalid_input",
    field: "strategyId",
  },
  {
    name: "priority a string",
    method: "POST",
    url: "/v1/builds",
    options: { body: { strategyId: "a", priority: "high" } },
    status: 400,
    code: "invalid_input",
    field: "priority",
  },
  {
    name: "priority fractional",
    method: "POST",
    url: "/v1/builds",
    options: { body: { strategyId: "a", priority: 1.5 } },
    status: 400,
    code: "invalid_input",
    field: "priority",
  },
  {
    name: "priority too big",
    method: "POST",
    url: "/v1/builds",
    options: { body: { strategyId: "a", priority: 5000 } },
    status: 400,
    code: "invalid_input",
    field: "priority",
  },
  {
    name: "negative maxRetries",
    method: "POST",
    url: "/v1/builds",
    options: { body: { strategyId: "a", maxRetries: -1 } },
    status: 400,
    code: "invalid_input",
    field: "maxRetries",
  },
  {
    name: "params an array",
    method: "POST",
    url: "/v1/builds",
    options: { body: { strategyId: "a", params: [1, 2] } },
    status: 400,
    code: "invalid_input",
    field: "params",
  },
  {
    name: "empty idempotencyKey",
    method: "POST",
    url: "/v1/builds",
    options: { body: { strategyId: "a", idempotencyKey: "" } },
    status: 400,
    code: "invalid_input",
    field: "idempotencyKey",
  },
  {
    name: "unknown field",
    method: "POST",
    url: "/v1/builds",
    options: { body: { strategyId: "a", colour: "red" } },
    status: 400,
    code: "invalid_input",
    field: "colour",
  },
  {
    name: "prototype pollution",
    method: "POST",
    url: "/v1/builds",
    options: { rawBody: '{"strategyId":"a","__proto__":{"x":1}}' },
    status: 400,
    code: "invalid_input",
  },
  {
    name: "text/plain body",
    method: "POST",
    url: "/v1/builds",
    options: { rawBody: "strategyId=a", headers: { "content-type": "text/plain" } },
    status: 415,
    code: "invalid_input",
  },
  {
    name: "huge body",
    method: "POST",
    url: "/v1/builds",
    options: { body: { strategyId: "a", params: { blob: big } } },
    status: 413,
    code: "payload_too_large",
  },
  {
    name: "params over 100 KiB",
    method: "POST",
    url: "/v1/builds",
    options: { body: { strategyId: "a", params: { blob: "y".repeat(MAX_PARAMS_BYTES) } } },
    status: 413,
    code: "payload_too_large",
    field: "params",
  },
  // list queries
  {
    name: "negative limit",
    method: "GET",
    url: "/v1/builds?limit=-1",
    status: 400,
    code: "invalid_input",
    field: "limit",
  },
  {
    name: "zero limit",
    method: "GET",
    url: "/v1/builds?limit=0",
    status: 400,
    code: "invalid_input",
    field: "limit",
  },
  {
    name: "too big limit",
    method: "GET",
    url: "/v1/builds?limit=100000",
    status: 400,
    code: "invalid_input",
    field: "limit",
  },
  {
    name: "limit not a number",
    method: "GET",
    url: "/v1/builds?limit=ten",
    status: 400,
    code: "invalid_input",
    field: "limit",
  },
  {
    name: "limit given twice",
    method: "GET",
    url: "/v1/builds?limit=1&limit=2",
    status: 400,
    code: "invalid_input",
    field: "limit",
  },
  {
    name: "unknown status",
    method: "GET",
    url: "/v1/builds?status=exploded",
    status: 400,
    code: "invalid_input",
    field: "status",
  },
  {
    name: "bad cursor",
    method: "GET",
    url: "/v1/builds?cursor=not-a-cursor",
    status: 400,
    code: "invalid_input",
    field: "cursor",
  },
  {
    name: "unknown query parameter",
    method: "GET",
    url: "/v1/builds?sort=asc",
    status: 400,
    code: "invalid_input",
    field: "sort",
  },
  {
    name: "queue limit too big",
    method: "GET",
    url: "/v1/queue?limit=1000",
    status: 400,
    code: "invalid_input",
    field: "limit",
  },
  {
    name: "unknown worker status",
    method: "GET",
    url: "/v1/workers?status=sleepy",
    status: 400,
    code: "invalid_input",
    field: "status",
  },
  // ids
  {
    name: "bad UUID",
    method: "GET",
    url: "/v1/builds/not-a-uuid",
    status: 400,
    code: "invalid_input",
    field: "id",
  },
  {
    name: "upper-case UUID",
    method: "GET",
    url: "/v1/builds/ABCDEF00-0000-4000-8000-000000000000",
    status: 400,
    code: "invalid_input",
    field: "id",
  },
  { name: "unknown build", method: "GET", url: `/v1/builds/${UNKNOWN_ID}`, status: 404, code: "not_found" },
  {
    name: "stop a bad UUID",
    method: "POST",
    url: "/v1/builds/123/stop",
    options: { body: {} },
    status: 400,
    code: "invalid_input",
    field: "id",
  },
  {
    name: "stop an unknown build",
    method: "POST",
    url: `/v1/builds/${UNKNOWN_ID}/stop`,
    options: { body: {} },
    status: 404,
    code: "not_found",
  },
  {
    name: "retry an unknown build",
    method: "POST",
    url: `/v1/builds/${UNKNOWN_ID}/retry`,
    options: { body: {} },
    status: 404,
    code: "not_found",
  },
  {
    name: "events of an unknown build",
    method: "GET",
    url: `/v1/builds/${UNKNOWN_ID}/events`,
    status: 404,
    code: "not_found",
  },
  {
    name: "bad Last-Event-ID",
    method: "GET",
    url: "/v1/events",
    options: { headers: { "last-event-id": "yesterday" } },
    status: 400,
    code: "invalid_input",
    field: "Last-Event-ID",
  },
  {
    name: "bad lastEventId query",
    method: "GET",
    url: "/v1/events?lastEventId=-5",
    status: 400,
    code: "invalid_input",
    field: "lastEventId",
  },
  // routes
  { name: "unknown route", method: "GET", url: "/v1/nothing", status: 404, code: "not_found" },
  { name: "unknown method", method: "DELETE", url: "/v1/builds", status: 404, code: "not_found" },
];

/** Cases on the queued build (filled in once it exists). */
const onQueued = (): Case[] => [
  {
    name: "stop reason a number",
    method: "POST",
    url: `/v1/builds/${queuedId}/stop`,
    options: { body: { reason: 5 } },
    status: 400,
    code: "invalid_input",
    field: "reason",
  },
  {
    name: "stop with an unknown field",
    method: "POST",
    url: `/v1/builds/${queuedId}/stop`,
    options: { body: { force: true } },
    status: 400,
    code: "invalid_input",
    field: "force",
  },
  {
    name: "stop reason too long",
    method: "POST",
    url: `/v1/builds/${queuedId}/stop`,
    options: { body: { reason: "r".repeat(1001) } },
    status: 400,
    code: "invalid_input",
    field: "reason",
  },
  {
    name: "retry with a body field",
    method: "POST",
    url: `/v1/builds/${queuedId}/retry`,
    options: { body: { now: true } },
    status: 400,
    code: "invalid_input",
    field: "now",
  },
  {
    name: "retry a queued build",
    method: "POST",
    url: `/v1/builds/${queuedId}/retry`,
    options: { body: {} },
    status: 409,
    code: "invalid_state",
  },
];

describe.each(["inject", "fetch"] as const)("malformed requests via %s", (transport) => {
  it("each gets its 4xx, a JSON error naming the field, and creates or changes nothing", async () => {
    const before = await countBuilds(api.queue);
    for (const c of [...cases, ...onQueued()]) {
      const res = await api[transport](c.method, c.url, c.options);
      const label = `${c.name}: ${res.status} ${res.text.slice(0, 200)}`;
      expect(res.status, label).toBe(c.status);
      expect(res.json?.error?.code, label).toBe(c.code);
      expect(typeof res.json.error.message, label).toBe("string");
      if (c.field) expect(res.json.error.field, label).toBe(c.field);
      expect(res.text, label).not.toMatch(/\bat .*\.(ts|js):\d+|node_modules|stack/);
      expect(res.headers["x-request-id"], label).toBeTruthy();
    }
    expect(await countBuilds(api.queue)).toBe(before);
    expect((await api.queue.get(queuedId)).status).toBe("queued");
  });

  it("an internal error: 500 with a generic message and the request id; the details only in the log", async () => {
    const res = await api[transport]("GET", "/v1/test-bug", {
      headers: { "x-request-id": `bug-${transport}` },
    });
    expect(res.status).toBe(500);
    expect(res.json).toEqual({
      error: {
        code: "internal_error",
        message: `internal error; the server log has the details under request id bug-${transport}`,
        requestId: `bug-${transport}`,
      },
    });
    expect(res.headers["x-request-id"]).toBe(`bug-${transport}`);
    const logged = api.logs.filter(
      (l) => l.includes(`"reqId":"bug-${transport}"`) && l.includes("secret internals"),
    );
    expect(logged.length).toBeGreaterThan(0);
  });
});

it("a client's own request id is kept only when it is plain; otherwise one is drawn", async () => {
  const own = await api.inject("GET", "/health", { headers: { "x-request-id": "abc-123" } });
  expect(own.headers["x-request-id"]).toBe("abc-123");
  const hostile = await api.inject("GET", "/health", { headers: { "x-request-id": 'a"}\n{evil' } });
  expect(hostile.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
  // Every request's log lines carry its id.
  expect(api.logs.some((l) => l.includes('"reqId":"abc-123"'))).toBe(true);
});
