/**
 * Auth: the token configuration (OCULUS_TOKENS, OCULUS_TOKENS_FILE), the loopback rule, scopes on
 * every route (no token 401, wrong scope 403, right scope ok; admin can do everything), the actor
 * recorded, tokens absent from the logs, and the per-token rate limit.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rateLimitFromEnv } from "../../src/cli/up.js";
import { checkBind, isLoopback, loadAuthConfig, parseTokenList } from "../../src/http/auth.js";
import { ConfigError } from "../../src/index.js";
import { openTestApi, type TestApi } from "../helpers/api.js";

const TOKENS = {
  reader: "read-token-0123456789abcdef",
  submitter: "submit-token-0123456789abcdef",
  admin: "admin-token:with-colon-0123456789",
  both: "read-submit-token-0123456789ab",
};

const tokenSpecs = [
  { name: "reader", token: TOKENS.reader, scopes: ["read" as const] },
  { name: "submitter", token: TOKENS.submitter, scopes: ["submit" as const] },
  { name: "ops-admin", token: TOKENS.admin, scopes: ["admin" as const] },
  { name: "ci", token: TOKENS.both, scopes: ["read" as const, "submit" as const] },
];

describe("token configuration", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "oculus-tokens-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("OCULUS_TOKENS: name:scopes:token entries; the token may hold colons", () => {
    const specs = parseTokenList(` ci:read+submit:${TOKENS.both} , ops:admin:${TOKENS.admin}`);
    expect(specs).toEqual([
      { name: "ci", scopes: ["read", "submit"], token: TOKENS.both },
      { name: "ops", scopes: ["admin"], token: TOKENS.admin },
    ]);
    const auth = loadAuthConfig({ OCULUS_TOKENS: `ci:read+submit:${TOKENS.both}` });
    expect(auth.tokens.map((t) => [t.name, [...t.scopes]])).toEqual([["ci", ["read", "submit"]]]);
  });

  it("OCULUS_TOKENS_FILE: a JSON file of tokens", () => {
    const file = path.join(dir, "tokens.json");
    writeFileSync(file, JSON.stringify({ tokens: tokenSpecs }));
    expect(loadAuthConfig({ OCULUS_TOKENS_FILE: file }).tokens.map((t) => t.name)).toEqual([
      "reader",
      "submitter",
      "ops-admin",
      "ci",
    ]);
  });

  it.each([
    ["no scopes part", { OCULUS_TOKENS: "ci-0123456789abcdefgh" }, /not name:scopes:token/],
    [
      "an unknown scope",
      { OCULUS_TOKENS: `ci:write:${TOKENS.both}` },
      /scopes.0 must be read, submit or admin/,
    ],
    ["a short token", { OCULUS_TOKENS: "ci:read:short" }, /token must be at least 16 characters/],
    [
      "a repeated name",
      { OCULUS_TOKENS: `a:read:${TOKENS.reader},a:read:${TOKENS.both}` },
      /name "a" repeats/,
    ],
    [
      "a repeated token",
      { OCULUS_TOKENS: `a:read:${TOKENS.reader},b:admin:${TOKENS.reader}` },
      /same secret/,
    ],
    ["both variables", { OCULUS_TOKENS: `a:read:${TOKENS.reader}`, OCULUS_TOKENS_FILE: "/x" }, /not both/],
    ["a missing file", { OCULUS_TOKENS_FILE: "/nonexistent/tokens.json" }, /cannot read/],
  ])("refuses %s with a ConfigError naming the variable", (_label, env, message) => {
    expect(() => loadAuthConfig(env)).toThrow(ConfigError);
    expect(() => loadAuthConfig(env)).toThrow(message);
  });

  it("no tokens: auth off, and only loopback addresses may be bound", () => {
    const open = loadAuthConfig({});
    expect(open.tokens).toEqual([]);
    for (const host of ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
      expect(isLoopback(host)).toBe(true);
    for (const host of ["0.0.0.0", "::", "10.0.0.5", "example.com"]) expect(isLoopback(host)).toBe(false);
    expect(() => checkBind("0.0.0.0", open)).toThrow(/refusing to listen on 0.0.0.0 without authentication/);
    expect(() =>
      checkBind("0.0.0.0", loadAuthConfig({ OCULUS_TOKENS: `a:read:${TOKENS.reader}` })),
    ).not.toThrow();
  });
});

describe("scopes on every route", () => {
  let api: TestApi;
  let queued: string;
  let stopped: string;

  beforeAll(async () => {
    api = await openTestApi("http_auth", { tokens: tokenSpecs });
    queued = (await api.queue.submit({ strategyId: "auth" })).build.id;
    stopped = (await api.queue.submit({ strategyId: "auth-stopped" })).build.id;
    await api.queue.stop(stopped);
    await api.queue.schedules.add({ name: "auth-nightly", cron: "0 2 * * *", strategyId: "auth" });
  });
  afterAll(async () => {
    await api?.cleanup();
  });

  type Who = keyof typeof TOKENS | "none" | "wrong";
  const tokenOf = (who: Who) =>
    who === "none" ? undefined : who === "wrong" ? "not-a-configured-token-at-all" : TOKENS[who];

  // [route, what it needs]; every route is tried with every kind of caller.
  const routes = (): [string, string, "read" | "submit" | "admin" | "public", unknown?][] => [
    ["GET", "/v1/builds", "read"],
    ["GET", `/v1/builds/${queued}`, "read"],
    ["GET", "/v1/queue", "read"],
    ["GET", "/v1/workers", "read"],
    ["GET", `/v1/builds/${stopped}/events`, "read"],
    ["GET", "/metrics", "read"],
    ["POST", "/v1/builds", "submit", { strategyId: "auth-new" }],
    // A 409 (stopping a stopped build, retrying a queued one) shows the request got past auth.
    ["POST", `/v1/builds/${stopped}/stop`, "admin"],
    ["POST", `/v1/builds/${queued}/retry`, "admin"],
    ["GET", "/v1/schedules", "read"],
    ["GET", "/v1/schedules/auth-nightly", "read"],
    // 201 the first time the admin creates it, 409 after: past auth either way.
    ["POST", "/v1/schedules", "admin", { name: "auth-new", cron: "0 3 * * *", strategyId: "auth" }],
    ["PUT", "/v1/schedules/auth-nightly", "admin", { cron: "0 2 * * *", strategyId: "auth" }],
    ["POST", "/v1/schedules/auth-nightly/pause", "admin", {}],
    ["POST", "/v1/schedules/auth-nightly/resume", "admin", {}],
    ["GET", "/health", "public"],
    ["GET", "/openapi.json", "public"],
    ["GET", "/docs", "public"],
  ];

  const allowed = (who: Who, needs: string) => {
    if (needs === "public") return true;
    if (who === "none" || who === "wrong") return false;
    if (who === "admin") return true;
    const scopes = tokenSpecs.find((t) => t.token === TOKENS[who])?.scopes as string[];
    return scopes.includes(needs);
  };

  it.each(["inject", "fetch"] as const)(
    "via %s: 401 without a valid token, 403 without the scope, else served",
    async (transport) => {
      for (const who of ["none", "wrong", "reader", "submitter", "admin", "both"] as const) {
        for (const [method, url, needs, body] of routes()) {
          const res = await api[transport](method, url, { token: tokenOf(who), body });
          const label = `${who} ${method} ${url}: ${res.status} ${res.text.slice(0, 120)}`;
          if (allowed(who, needs)) {
            expect([200, 201, 409], label).toContain(res.status);
          } else if (who === "none" || who === "wrong") {
            expect(res.status, label).toBe(401);
            expect(res.json.error.code, label).toBe("unauthorized");
            expect(res.headers["www-authenticate"], label).toBe('Bearer realm="oculus"');
          } else {
            expect(res.status, label).toBe(403);
            expect(res.json.error, label).toMatchObject({ code: "forbidden" });
            expect(res.json.error.message, label).toContain(needs);
          }
        }
      }
    },
  );

  it("records the token's name as the actor, and no token ever reaches the log", async () => {
    const { build } = await api.queue.submit({ strategyId: "auth-actor" });
    const res = await api.fetch("POST", `/v1/builds/${build.id}/stop`, {
      token: TOKENS.admin,
      body: { reason: "by the admin" },
    });
    expect(res.json.build).toMatchObject({ status: "stopped", stoppedBy: "ops-admin" });
    const submitted = await api.fetch("POST", "/v1/builds", {
      token: TOKENS.both,
      body: { strategyId: "auth-x" },
    });
    const events = await api.queue.store.db.query<{ actor: string }>(
      "SELECT actor FROM build_events WHERE build_id = $1",
      [submitted.json.build.id],
    );
    expect(events.rows.map((r) => r.actor)).toEqual(["ci"]);

    const log = api.logs.join("\n");
    expect(api.logs.length).toBeGreaterThan(50);
    for (const token of Object.values(TOKENS)) expect(log).not.toContain(token);
    expect(log).not.toContain("not-a-configured-token");
  });
});

describe("rate limit", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await openTestApi("http_rate", { tokens: tokenSpecs, rateLimit: { max: 3, windowMs: 60_000 } });
  });
  afterAll(async () => {
    await api?.cleanup();
  });

  it("OCULUS_RATE_LIMIT: requests a minute per token; 0 turns it off; anything else is refused", () => {
    expect(rateLimitFromEnv({})).toEqual({ max: 1200, windowMs: 60_000 });
    expect(rateLimitFromEnv({ OCULUS_RATE_LIMIT: "30" })).toEqual({ max: 30, windowMs: 60_000 });
    expect(rateLimitFromEnv({ OCULUS_RATE_LIMIT: "0" })).toBe(false);
    expect(() => rateLimitFromEnv({ OCULUS_RATE_LIMIT: "lots" })).toThrow(ConfigError);
  });

  it("429 with Retry-After once a token spent its budget; another token is not affected; /health is exempt", async () => {
    for (let i = 0; i < 3; i++)
      expect((await api.fetch("GET", "/v1/builds", { token: TOKENS.reader })).status).toBe(200);
    const limited = await api.fetch("GET", "/v1/workers", { token: TOKENS.reader });
    expect(limited.status).toBe(429);
    expect(limited.json.error.code).toBe("rate_limited");
    expect(Number(limited.headers["retry-after"])).toBeGreaterThan(0);
    expect((await api.fetch("GET", "/v1/builds", { token: TOKENS.admin })).status).toBe(200);
    expect((await api.fetch("GET", "/health")).status).toBe(200);
    // Nothing is created past the limit.
    const before = (await api.queue.statusCounts()).queued;
    for (let i = 0; i < 4; i++)
      await api.fetch("POST", "/v1/builds", { token: TOKENS.submitter, body: { strategyId: "r" } });
    expect((await api.queue.statusCounts()).queued).toBe(before + 3);
  });
});
