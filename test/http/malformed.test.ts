/**
 * Malformed requests: each gets its 4xx with `{error: {code, message, field?}}`, no internals, and
 * creates nothing (the number of builds is the same before and after). Plus unknown routes, an
 * internal error (500, generic message with the request id, details only in the log) and request ids.
 */
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_PARAMS_BYTES, MAX_PARAMS_DEPTH } from "../../src/index.js";
import { type CallOptions, countBuilds, openTestApi, rawHttp, type TestApi } from "../helpers/api.js";
import { eventually } from "../helpers/queue.js";

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
  // what PostgreSQL cannot store, and what JSON.parse changes: refused, naming the field
  ...[
    ["NUL in strategyId", '{"strategyId":"a\\u0000b"}', "strategyId"],
    ["lone surrogate in strategyId", '{"strategyId":"a\\ud800"}', "strategyId"],
    ["NUL in idempotencyKey", '{"strategyId":"a","idempotencyKey":"k\\u0000"}', "idempotencyKey"],
    ["NUL in a params value", '{"strategyId":"a","params":{"x":["ok","\\u0000"]}}', "params.x.1"],
    ["NUL in a params key", '{"strategyId":"a","params":{"x":{"k\\u0000":1}}}', "params.x"],
    ["lone surrogate in params", '{"strategyId":"a","params":{"x":"\\udc00"}}', "params.x"],
    ["a number JSON.parse makes Infinity", '{"strategyId":"a","params":{"n":1e400}}', "params.n"],
    ["a negative infinite number", '{"strategyId":"a","params":{"n":[-1e999]}}', "params.n.0"],
    ["an infinite priority", '{"strategyId":"a","priority":1e400}', "priority"],
    [
      "params nested 5,000 deep",
      `{"strategyId":"a","params":${'{"a":'.repeat(5000)}1${"}".repeat(5000)}}`,
      `params${".a".repeat(MAX_PARAMS_DEPTH)}`,
    ],
    [
      "params arrays nested 100,000 deep",
      `{"strategyId":"a","params":{"x":${"[".repeat(100_000)}${"]".repeat(100_000)}}}`,
      `params.x${".0".repeat(MAX_PARAMS_DEPTH - 1)}`,
    ],
  ].map(
    ([name, rawBody, field]): Case => ({
      name: name as string,
      method: "POST",
      url: "/v1/builds",
      options: { rawBody },
      status: 400,
      code: "invalid_input",
      field,
    }),
  ),
  {
    name: "gzip Content-Encoding",
    method: "POST",
    url: "/v1/builds",
    options: { rawBody: '{"strategyId":"a"}', headers: { "content-encoding": "gzip" } },
    status: 415,
    code: "invalid_input",
    field: "Content-Encoding",
  },
  {
    name: "a charset other than UTF-8",
    method: "POST",
    url: "/v1/builds",
    options: {
      rawBody: '{"strategyId":"a"}',
      headers: { "content-type": "application/json; charset=latin1" },
    },
    status: 415,
    code: "invalid_input",
    field: "Content-Type",
  },
  // list queries
  {
    name: "NUL in the strategyId filter",
    method: "GET",
    url: "/v1/builds?strategyId=a%00",
    status: 400,
    code: "invalid_input",
    field: "strategyId",
  },
  ...["0x10", "1e1", "+5", "5.0", "%205", "5%20", "", "１"].map(
    (value): Case => ({
      name: `limit=${value} (not plain decimal)`,
      method: "GET",
      url: `/v1/builds?limit=${value}`,
      status: 400,
      code: "invalid_input",
      field: "limit",
    }),
  ),
  {
    name: "queue limit in hex",
    method: "GET",
    url: "/v1/queue?limit=0x5",
    status: 400,
    code: "invalid_input",
    field: "limit",
  },
  {
    name: "bad percent-encoding in the path",
    method: "GET",
    url: "/%zz",
    status: 400,
    code: "invalid_input",
  },
  {
    name: "bad percent-encoding in a build id",
    method: "GET",
    url: "/v1/builds/%zz",
    status: 400,
    code: "invalid_input",
  },
  {
    name: "a NUL in a docs file name",
    method: "GET",
    url: "/docs/static/index.html%00",
    status: 404,
    code: "not_found",
  },
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
    name: "stop reason with a NUL",
    method: "POST",
    url: `/v1/builds/${queuedId}/stop`,
    options: { rawBody: '{"reason":"because\\u0000"}' },
    status: 400,
    code: "invalid_input",
    field: "reason",
  },
  {
    name: "stop reason with a lone surrogate",
    method: "POST",
    url: `/v1/builds/${queuedId}/stop`,
    options: { rawBody: '{"reason":"\\ud83d"}' },
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

it("what is plainly UTF-8 JSON is taken: charset utf-8 in any spelling, Content-Encoding identity", async () => {
  for (const headers of <Record<string, string>[]>[
    { "content-type": 'application/json; charset="UTF-8"' },
    { "content-type": "application/json;charset=utf8" },
    { "content-type": "application/json", "content-encoding": "identity" },
  ]) {
    const res = await api.fetch("POST", "/v1/builds", { body: { strategyId: "plain-utf8 \u00e9" }, headers });
    expect(res.status, JSON.stringify(headers)).toBe(201);
    expect(res.json.build.strategyId).toBe("plain-utf8 \u00e9");
  }
  // A GET with a stray Content-Encoding but no body is not concerned.
  const list = await api.fetch("GET", "/v1/builds?limit=007", { headers: { "content-encoding": "gzip" } });
  expect(list.status).toBe(200);
});

it("the library refuses the same input with a ValidationError naming the field, and writes nothing", async () => {
  const before = await countBuilds(api.queue);
  const refusals: [string, () => Promise<unknown>][] = [
    ["strategyId", () => api.queue.submit({ strategyId: "a\u0000" })],
    ["params.x", () => api.queue.submit({ strategyId: "a", params: { x: "\ud800" } })],
    ["params.n", () => api.queue.submit({ strategyId: "a", params: { n: Number.NaN } })],
    ["idempotencyKey", () => api.queue.submit({ strategyId: "a", idempotencyKey: "\u0000" })],
    [
      "builds[1].params.x",
      () => api.queue.submitMany([{ strategyId: "a" }, { strategyId: "b", params: { x: "\u0000" } }]),
    ],
    ["strategyId", () => api.queue.list({ strategyId: "a\u0000" })],
    ["reason", () => api.queue.stop(queuedId, { reason: "why\u0000" })],
    ["reason", () => api.queue.remove(queuedId, { reason: "\udc00" })],
    ["workerId", () => api.queue.claim("worker\u0000")],
    ["actor", () => api.queue.submit({ strategyId: "a" }, { actor: "me\u0000" })],
    ["actor", () => api.queue.retry(queuedId, { actor: "\ud800" })],
  ];
  for (const [field, call] of refusals) {
    await expect(call(), field).rejects.toMatchObject({ code: "invalid_input", field });
  }
  expect(await countBuilds(api.queue)).toBe(before);
  expect((await api.queue.get(queuedId)).status).toBe("queued");
});

describe("requests fetch would not send as they are (over a raw socket)", () => {
  const request = (path: string, extra = "") =>
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${extra}\r\n`;
  it.each([
    [
      "a traversal out of the docs' files",
      request("/docs/static/%2e%2e/%2e%2e/package.json"),
      404,
      "not_found",
    ],
    ["a plain ../ traversal", request("/docs/static/../../package.json"), 404, "not_found"],
    ["a NUL in a docs file name", request("/docs/static/%00"), 404, "not_found"],
    ["bad percent-encoding", request("/%zz"), 400, "invalid_input"],
    ["a control character in a header", request("/health", "X-Evil: a\u0001b\r\n"), 400, "invalid_input"],
    ["a request line that is not HTTP", "BLAH\r\n\r\n", 400, "invalid_input"],
    [
      "Content-Length with chunked encoding",
      request("/health", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
      400,
      "invalid_input",
    ],
    [
      "headers over the size limit",
      request("/health", `X-Big: ${"b".repeat(20_000)}\r\n`),
      431,
      "payload_too_large",
    ],
  ])("%s: %i with the error shape", async (_name, raw, status, code) => {
    const res = await rawHttp(await api.url(), raw);
    expect(res.status, res.text).toBe(status);
    expect(res.json?.error?.code, res.text).toBe(code);
    expect(typeof res.json.error.message).toBe("string");
    expect(res.text).not.toMatch(/statusCode|FST_|package\.json|"name"/);
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

describe("a request that arrives while the server shuts down", () => {
  it("gets 503 unavailable with the error shape, Retry-After and Connection: close", async () => {
    let entered: () => void = () => undefined;
    const inFlight = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const closingApi = await openTestApi("http_closing", {
      shutdownGraceMs: 30_000,
      setup: (app) =>
        app.get("/v1/test-slow", { config: { access: "read" } }, async () => {
          entered();
          await released;
          return { ok: true };
        }),
    });
    try {
      // Two requests on one kept-alive connection: the second is sent once the shutdown has begun,
      // while the first is still being answered (so the connection is not idle and stays open).
      const { port } = new URL(await closingApi.url());
      const socket = connect(Number(port), "127.0.0.1");
      const chunks: Buffer[] = [];
      socket.on("data", (chunk: Buffer) => chunks.push(chunk));
      const ended = new Promise<void>((resolve) => socket.on("close", () => resolve()));
      socket.write("GET /v1/test-slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
      await inFlight;
      const closed = closingApi.app.close();
      await eventually(async () => !closingApi.app.server.listening);
      socket.write("GET /v1/builds HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
      // The second request reaches the router before the first is released.
      await eventually(async () => closingApi.logs.some((l) => l.includes("refused: shutting down")));
      release();
      await ended;
      await closed;
      const text = Buffer.concat(chunks).toString();
      expect(text, text).toMatch(/^HTTP\/1\.1 200 /);
      const second = text.slice(text.indexOf("HTTP/1.1 ", 1));
      expect(second, text).toMatch(/^HTTP\/1\.1 503 /);
      expect(second).toMatch(/\r\nretry-after: 1\r\n/i);
      expect(second).toMatch(/\r\nconnection: close\r\n/i);
      const body = JSON.parse(second.slice(second.indexOf("\r\n\r\n") + 4));
      expect(body).toEqual({
        error: { code: "unavailable", message: expect.stringMatching(/shutting down/) },
      });
    } finally {
      release();
      await closingApi.cleanup();
    }
  });
});
