/**
 * CORS (OCULUS_CORS_ORIGINS): preflights from an allowed origin are answered with 204 and the
 * Access-Control-* headers without a token and without spending the rate limit; actual requests still
 * need their token and scope, and their answers (refusals included) carry the headers a page needs
 * to read them; other origins get no Access-Control-Allow-Origin; `*` allows any origin; without the
 * setting no CORS header is sent at all. The event streams, whose replies are hijacked and written by
 * hand, carry the headers too (over a real socket).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CORS_MAX_AGE_S } from "../../src/http/cors.js";
import { type ApiResponse, openTestApi, type TestApi } from "../helpers/api.js";

const APP = "https://app.example.com";
const LOCAL = "http://localhost:3000";
const OTHER = "https://evil.example.net";

const READER = "cors-reader-token-0123456789";
const PACER = "cors-pacer-token-0123456789ab";
const tokens = [
  { name: "reader", token: READER, scopes: ["read" as const, "submit" as const] },
  { name: "pacer", token: PACER, scopes: ["read" as const] },
];
const RATE_LIMIT = { max: 3, windowMs: 60_000 };

const transports = ["inject", "fetch"] as const;

/** The names in a comma-separated header value, lower-cased. */
function names(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((name) => name.trim().toLowerCase())
    .filter(Boolean);
}

function corsHeaders(res: ApiResponse): string[] {
  return Object.keys(res.headers).filter((name) => name.startsWith("access-control-"));
}

function preflight(origin: string, method = "POST", headers = "authorization, content-type") {
  return {
    headers: {
      origin,
      "access-control-request-method": method,
      "access-control-request-headers": headers,
    },
  };
}

describe("CORS with listed origins", () => {
  let api: TestApi;
  let finished: string;
  beforeAll(async () => {
    api = await openTestApi("http_cors", { tokens, cors: { origins: [APP, LOCAL] } });
    finished = (await api.queue.submit({ strategyId: "cors-finished" })).build.id;
    await api.queue.stop(finished);
  });
  afterAll(async () => {
    await api?.cleanup();
  });

  it.each(transports)(
    "via %s: a preflight from an allowed origin is 204 with the Access-Control-* headers, no token needed",
    async (transport) => {
      for (const [origin, url, method, headers] of [
        [APP, "/v1/builds", "POST", "authorization, content-type, x-request-id"],
        [LOCAL, `/v1/builds/${finished}/stop`, "POST", "authorization"],
        [APP, "/v1/events", "GET", "authorization, last-event-id"],
      ] as const) {
        const res = await api[transport]("OPTIONS", url, preflight(origin, method, headers));
        const label = `${origin} ${method} ${url}: ${res.status} ${JSON.stringify(res.headers)}`;
        expect(res.status, label).toBe(204);
        expect(res.text, label).toBe("");
        expect(res.headers["access-control-allow-origin"], label).toBe(origin);
        expect(names(res.headers["access-control-allow-methods"]), label).toEqual([
          "get",
          "post",
          "put",
          "delete",
          "options",
        ]);
        expect(names(res.headers["access-control-allow-headers"]), label).toEqual([
          "authorization",
          "content-type",
          "last-event-id",
          "x-request-id",
        ]);
        expect(res.headers["access-control-max-age"], label).toBe(String(CORS_MAX_AGE_S));
        expect(names(res.headers.vary), label).toContain("origin");
        // Bearer tokens, not cookies: credentials are never allowed cross-origin.
        expect(res.headers["access-control-allow-credentials"], label).toBeUndefined();
      }
    },
  );

  it.each(transports)(
    "via %s: a request from an allowed origin needs its token and scope; every answer carries the CORS headers",
    async (transport) => {
      const ok = await api[transport]("GET", "/v1/builds", { token: READER, headers: { origin: LOCAL } });
      expect(ok.status).toBe(200);
      expect(ok.headers["access-control-allow-origin"]).toBe(LOCAL);
      expect(names(ok.headers["access-control-expose-headers"])).toEqual([
        "x-request-id",
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
      ]);
      expect(names(ok.headers.vary)).toContain("origin");
      expect(ok.headers["x-request-id"]).toBeTruthy();

      // A page can read the refusal (and tell a missing token from a network error).
      const refused = await api[transport]("GET", "/v1/builds", { headers: { origin: APP } });
      expect(refused.status).toBe(401);
      expect(refused.json.error.code).toBe("unauthorized");
      expect(refused.headers["access-control-allow-origin"]).toBe(APP);
      const forbidden = await api[transport]("POST", `/v1/builds/${finished}/stop`, {
        token: READER,
        headers: { origin: APP },
      });
      expect(forbidden.status).toBe(403);
      expect(forbidden.headers["access-control-allow-origin"]).toBe(APP);

      const posted = await api[transport]("POST", "/v1/builds", {
        token: READER,
        body: { strategyId: `cors-${transport}` },
        headers: { origin: APP },
      });
      expect(posted.status).toBe(201);
      expect(posted.headers["access-control-allow-origin"]).toBe(APP);
    },
  );

  it.each(transports)(
    "via %s: another origin gets no Access-Control-Allow-Origin (preflight or request)",
    async (transport) => {
      for (const origin of [OTHER, `${APP}.evil.net`, "null", "http://app.example.com"]) {
        const pre = await api[transport]("OPTIONS", "/v1/builds", preflight(origin));
        expect(pre.headers["access-control-allow-origin"], `preflight from ${origin}`).toBeUndefined();
        const res = await api[transport]("GET", "/v1/queue", { token: READER, headers: { origin } });
        expect(res.headers["access-control-allow-origin"], `GET from ${origin}`).toBeUndefined();
      }
    },
  );

  it("an event stream from an allowed origin carries Access-Control-Allow-Origin and Vary: Origin", async () => {
    const base = await api.url();
    const controller = new AbortController();
    const res = await fetch(`${base}/v1/events`, {
      headers: { origin: APP, authorization: `Bearer ${READER}` },
      signal: controller.signal,
    });
    try {
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
      expect(res.headers.get("access-control-allow-origin")).toBe(APP);
      expect(names(res.headers.get("vary") ?? undefined)).toContain("origin");
      expect(names(res.headers.get("access-control-expose-headers") ?? undefined)).toContain("x-request-id");
      expect(res.headers.get("x-request-id")).toBeTruthy();
    } finally {
      controller.abort();
    }

    // A finished build's stream ends at once: read it whole, from an allowed and another origin.
    const allowed = await api.fetch("GET", `/v1/builds/${finished}/events`, {
      token: READER,
      headers: { origin: LOCAL },
    });
    expect(allowed.status).toBe(200);
    expect(allowed.text).toContain("event: snapshot");
    expect(allowed.headers["access-control-allow-origin"]).toBe(LOCAL);
    expect(names(allowed.headers.vary)).toContain("origin");
    const other = await api.fetch("GET", `/v1/builds/${finished}/events`, {
      token: READER,
      headers: { origin: OTHER },
    });
    expect(other.status).toBe(200);
    expect(other.headers["access-control-allow-origin"]).toBeUndefined();
  });
});

describe("CORS and the rate limit", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await openTestApi("http_cors_rate", { tokens, cors: { origins: [APP] }, rateLimit: RATE_LIMIT });
  });
  afterAll(async () => {
    await api?.cleanup();
  });

  it.each(transports)("via %s: preflights are never rate limited", async (transport) => {
    for (let i = 0; i < RATE_LIMIT.max + 3; i++) {
      const res = await api[transport]("OPTIONS", "/v1/queue", preflight(APP, "GET", "authorization"));
      expect(res.status, `preflight ${i + 1}`).toBe(204);
    }
  });

  it("a rate-limited answer carries the CORS headers, so a page can read Retry-After", async () => {
    const call = () => api.fetch("GET", "/v1/workers", { token: PACER, headers: { origin: APP } });
    for (let i = 0; i < RATE_LIMIT.max; i++) {
      const res = await call();
      expect(res.status).toBe(200);
      expect(res.headers["x-ratelimit-remaining"]).toBe(String(RATE_LIMIT.max - i - 1));
    }
    const limited = await call();
    expect(limited.status).toBe(429);
    expect(limited.json.error.code).toBe("rate_limited");
    expect(limited.headers["access-control-allow-origin"]).toBe(APP);
    expect(Number(limited.headers["retry-after"])).toBeGreaterThan(0);
    expect(names(limited.headers["access-control-expose-headers"])).toContain("retry-after");
  });
});

describe("CORS for any origin (*)", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await openTestApi("http_cors_any", { tokens, cors: { origins: "*" } });
  });
  afterAll(async () => {
    await api?.cleanup();
  });

  it.each(transports)("via %s: every origin is allowed, requests still need a token", async (transport) => {
    for (const origin of [APP, OTHER]) {
      const pre = await api[transport]("OPTIONS", "/v1/builds", preflight(origin));
      expect(pre.status).toBe(204);
      expect(pre.headers["access-control-allow-origin"]).toBe("*");
      expect(names(pre.headers["access-control-allow-headers"])).toContain("authorization");
      const res = await api[transport]("GET", "/v1/queue", { token: READER, headers: { origin } });
      expect(res.status).toBe(200);
      expect(res.headers["access-control-allow-origin"]).toBe("*");
      expect(names(res.headers["access-control-expose-headers"])).toContain("x-request-id");
      expect((await api[transport]("GET", "/v1/queue", { headers: { origin } })).status).toBe(401);
    }
  });
});

describe("without CORS configured", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await openTestApi("http_cors_off", { tokens });
  });
  afterAll(async () => {
    await api?.cleanup();
  });

  it.each(transports)("via %s: no CORS header at all; a preflight is not answered", async (transport) => {
    const pre = await api[transport]("OPTIONS", "/v1/builds", preflight(APP));
    expect(pre.status).toBe(404);
    expect(corsHeaders(pre)).toEqual([]);
    const res = await api[transport]("GET", "/v1/queue", { token: READER, headers: { origin: APP } });
    expect(res.status).toBe(200);
    expect(corsHeaders(res)).toEqual([]);
  });
});
