/**
 * Trusted proxies (OCULUS_TRUST_PROXY): without auth the rate limit is keyed by the client's address.
 * Off (the default), X-Forwarded-For is ignored: every request from one socket address shares a
 * bucket whatever the header says. On, the address comes from the header: two clients behind one
 * proxy get a bucket each. The test clients connect from 127.0.0.1 (a real socket, or inject's
 * default address), which stands for the proxy.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { TrustProxy } from "../../src/http/server.js";
import { openTestApi, type TestApi } from "../helpers/api.js";

const transports = ["inject", "fetch"] as const;
type Transport = (typeof transports)[number];

let api: TestApi | undefined;
afterEach(async () => {
  await api?.cleanup();
  api = undefined;
});

/** A server without auth whose rate limit allows one request a minute per client address. */
async function openLimited(trustProxy?: TrustProxy): Promise<TestApi> {
  api = await openTestApi("http_trust_proxy", {
    rateLimit: { max: 1, windowMs: 60_000 },
    ...(trustProxy === undefined ? {} : { trustProxy }),
  });
  return api;
}

/** The statuses of GET /v1/workers sent with each X-Forwarded-For value in turn. */
async function statuses(test: TestApi, transport: Transport, forwardedFor: string[]): Promise<number[]> {
  const out: number[] = [];
  for (const header of forwardedFor) {
    const res = await test[transport]("GET", "/v1/workers", { headers: { "x-forwarded-for": header } });
    out.push(res.status);
  }
  return out;
}

describe("OCULUS_TRUST_PROXY and the rate limit without auth", () => {
  it.each(transports)("via %s: off (the default), X-Forwarded-For is ignored: one bucket", async (t) => {
    const test = await openLimited();
    expect(await statuses(test, t, ["203.0.113.1", "203.0.113.2"])).toEqual([200, 429]);
  });

  it.each(transports)("via %s: explicitly false, likewise", async (t) => {
    const test = await openLimited(false);
    expect(await statuses(test, t, ["203.0.113.1", "203.0.113.2"])).toEqual([200, 429]);
  });

  it.each(transports)("via %s: true, each forwarded client gets its own bucket", async (t) => {
    const test = await openLimited(true);
    expect(await statuses(test, t, ["203.0.113.1", "203.0.113.2", "203.0.113.1"])).toEqual([200, 200, 429]);
  });

  it.each(transports)("via %s: the proxy's address listed, its clients get their own buckets", async (t) => {
    const test = await openLimited(["10.0.0.0/8", "127.0.0.1"]);
    expect(await statuses(test, t, ["203.0.113.1", "203.0.113.2", "203.0.113.2"])).toEqual([200, 200, 429]);
  });

  it.each(transports)("via %s: a request from an address not listed: its header is ignored", async (t) => {
    const test = await openLimited(["10.0.0.0/8", "::1"]);
    expect(await statuses(test, t, ["203.0.113.1", "203.0.113.2"])).toEqual([200, 429]);
  });

  it.each(transports)(
    "via %s: one hop: the address the proxy appended counts, what the client wrote before it does not",
    async (t) => {
      const test = await openLimited(1);
      // With every hop trusted these would be three clients; with one, the last entry is the client.
      const forged = ["198.51.100.7, 203.0.113.1", "198.51.100.8, 203.0.113.2", "198.51.100.9, 203.0.113.1"];
      expect(await statuses(test, t, forged)).toEqual([200, 200, 429]);
    },
  );

  it.each(transports)("via %s: two hops: the entry before the last one is the client", async (t) => {
    const test = await openLimited(2);
    const chain = ["203.0.113.1, 10.0.0.1", "203.0.113.2, 10.0.0.1", "198.51.100.1, 203.0.113.1, 10.0.0.2"];
    expect(await statuses(test, t, chain)).toEqual([200, 200, 429]);
  });
});
