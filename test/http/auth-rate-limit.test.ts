/**
 * Failed authentications limited per client address (src/http/auth-failures.ts): after the limit,
 * the address gets 429 with Retry-After in the error shape, before its token is looked at; other
 * addresses, public routes, successful requests and 403s are not affected or counted. The limiter's
 * window and its bounded table are checked with a clock of our own.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthFailureLimiter } from "../../src/http/auth-failures.js";
import { RateLimitedError } from "../../src/index.js";
import { openTestApi, type TestApi } from "../helpers/api.js";

const READ = "auth-limit-read-token-0123456789";
const MAX = 5;

describe("failed authentications per address", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await openTestApi("auth_rate_limit", {
      tokens: [{ name: "reader", token: READ, scopes: ["read"] }],
      authFailureLimit: { max: MAX, windowMs: 60_000 },
      // Client addresses from X-Forwarded-For, so that one test process can be many clients.
      trustProxy: true,
    });
  });
  afterAll(() => api?.cleanup());

  const from = (address: string, token?: string) => ({
    headers: { "x-forwarded-for": address },
    ...(token ? { token } : {}),
  });

  it(`${MAX} failures are 401; then 429 with Retry-After, even with a valid token; other addresses go on`, async () => {
    const attacker = "203.0.113.7";
    for (let i = 0; i < MAX; i++) {
      const res = await api.inject("GET", "/v1/queue", from(attacker, `wrong-token-${i}-0123456789abc`));
      expect(res.status).toBe(401);
    }
    for (const token of ["wrong-token-x-0123456789abcdef", undefined, READ]) {
      const res = await api.inject("GET", "/v1/queue", from(attacker, token));
      expect(res.status).toBe(429);
      expect(res.json).toEqual({
        error: {
          code: "rate_limited",
          message: expect.stringMatching(/rate limit exceeded: retry in \d+ s/),
        },
      });
      const retryAfter = Number(res.headers["retry-after"]);
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(60);
    }
    // Public routes need no auth: not refused.
    expect((await api.inject("GET", "/health", from(attacker))).status).toBe(200);
    // Another address is not affected, with a good token or a bad one.
    expect((await api.inject("GET", "/v1/queue", from("198.51.100.1", READ))).status).toBe(200);
    expect(
      (await api.inject("GET", "/v1/queue", from("198.51.100.1", "wrong-token-y-0123456789ab"))).status,
    ).toBe(401);
  });

  it("successful requests and 403s do not count", async () => {
    const client = "198.51.100.2";
    for (let i = 0; i < 3 * MAX; i++) {
      expect((await api.inject("GET", "/v1/queue", from(client, READ))).status).toBe(200);
      // A valid token without the scope: 403, not a failed authentication.
      expect(
        (await api.inject("POST", "/v1/builds", { ...from(client, READ), body: { strategyId: "s" } })).status,
      ).toBe(403);
    }
    for (let i = 0; i < MAX; i++) {
      expect((await api.inject("GET", "/v1/queue", from(client))).status).toBe(401);
    }
    expect((await api.inject("GET", "/v1/queue", from(client, READ))).status).toBe(429);
  });

  it("over a real socket the socket's address is the key (no proxy header)", async () => {
    const url = await api.url();
    // 127.0.0.1 has not failed yet in this file: its first failures are 401.
    const res = await fetch(`${url}/v1/queue`, {
      headers: { authorization: "Bearer wrong-token-z-0123456789ab" },
    });
    expect(res.status).toBe(401);
  });
});

describe("AuthFailureLimiter", () => {
  it("the window ends: the address is served again, with a fresh budget", () => {
    let now = 1_000_000;
    const limiter = new AuthFailureLimiter({ max: 2, windowMs: 60_000 }, () => now);
    limiter.fail("a");
    limiter.check("a");
    limiter.fail("a");
    expect(() => limiter.check("a")).toThrow(RateLimitedError);
    now += 30_000;
    try {
      limiter.check("a");
      expect.unreachable();
    } catch (err) {
      expect((err as RateLimitedError).details.retryAfterSeconds).toBe(30);
    }
    now += 30_000;
    limiter.check("a");
    limiter.fail("a");
    limiter.check("a");
  });

  it("keeps a bounded table of addresses", () => {
    const now = 0;
    const limiter = new AuthFailureLimiter({ max: 1, windowMs: 60_000 }, () => now);
    for (let i = 0; i < 12_000; i++) limiter.fail(`10.0.${Math.floor(i / 256)}.${i % 256}`);
    expect(limiter.size).toBeLessThanOrEqual(10_000);
    // The newest addresses are kept.
    expect(() => limiter.check("10.0.46.223")).toThrow(RateLimitedError);
  });
});
