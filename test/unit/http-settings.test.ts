/**
 * The HTTP API's operator settings read from the environment: OCULUS_CORS_ORIGINS,
 * OCULUS_TRUST_PROXY, and the hardening settings (OCULUS_HTTP_*, OCULUS_AUTH_FAILURE_LIMIT,
 * OCULUS_METRICS_CACHE_MS). A bad value is a ConfigError (exit 2) naming the variable and the bad entry.
 */
import Fastify from "fastify";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/core/errors.js";
import { authFailureLimitFromEnv } from "../../src/http/auth-failures.js";
import { corsFromEnv } from "../../src/http/cors.js";
import { httpHardeningFromEnv, metricsCacheFromEnv } from "../../src/http/http-settings.js";
import { hostNameOf } from "../../src/http/open-mode.js";
import { redactQuery } from "../../src/http/request-log.js";
import { checkTransportLimits, DEFAULT_TRANSPORT_LIMITS } from "../../src/http/transport.js";
import { fastifyTrustProxy, trustProxyFromEnv } from "../../src/http/trust-proxy.js";

describe("OCULUS_CORS_ORIGINS", () => {
  it("unset or empty: CORS off", () => {
    expect(corsFromEnv({})).toBeUndefined();
    expect(corsFromEnv({ OCULUS_CORS_ORIGINS: "" })).toBeUndefined();
    expect(corsFromEnv({ OCULUS_CORS_ORIGINS: "  " })).toBeUndefined();
  });

  it("`*`: any origin", () => {
    expect(corsFromEnv({ OCULUS_CORS_ORIGINS: " * " })).toEqual({ origins: "*" });
  });

  it("comma-separated origins, spaces and empty entries dropped", () => {
    const env = {
      OCULUS_CORS_ORIGINS: " https://app.example.com, http://localhost:3000 ,,http://[::1]:8081",
    };
    expect(corsFromEnv(env)).toEqual({
      origins: ["https://app.example.com", "http://localhost:3000", "http://[::1]:8081"],
    });
  });

  it("refuses a list of nothing but commas", () => {
    expect(() => corsFromEnv({ OCULUS_CORS_ORIGINS: ",," })).toThrow(ConfigError);
    expect(() => corsFromEnv({ OCULUS_CORS_ORIGINS: ",," })).toThrow(
      /^invalid OCULUS_CORS_ORIGINS: names no origin, got ",,"/,
    );
  });

  it.each([
    [
      "a trailing slash",
      "https://app.example.com/",
      /"https:\/\/app\.example\.com\/".*as an origin it is "https:\/\/app\.example\.com"/,
    ],
    ["a path", "https://app.example.com/oculus", /"https:\/\/app\.example\.com\/oculus" is not an origin/],
    ["a query", "https://app.example.com?x=1", /"https:\/\/app\.example\.com\?x=1" is not an origin/],
    ["a fragment", "https://app.example.com#top", /"https:\/\/app\.example\.com#top" is not an origin/],
    ["no scheme", "app.example.com", /"app\.example\.com" is not an origin/],
    ["another scheme", "ftp://files.example.com", /"ftp:\/\/files\.example\.com" is not an origin/],
    [
      "credentials",
      "https://user:pw@app.example.com",
      /"https:\/\/user:pw@app\.example\.com" is not an origin/,
    ],
    ["the default port", "https://app.example.com:443", /as an origin it is "https:\/\/app\.example\.com"/],
    ["an upper-case host", "https://App.Example.com", /as an origin it is "https:\/\/app\.example\.com"/],
    ["a wildcard host", "https://*.example.com", /"https:\/\/\*\.example\.com": no wildcards/],
    ["`*` among origins", "https://app.example.com,*", /"\*": no wildcards in origins/],
    ["`null`", "null", /"null" is not an origin/],
  ])("refuses %s with a ConfigError naming the variable and the entry", (_label, value, message) => {
    const env = { OCULUS_CORS_ORIGINS: `http://localhost:3000,${value}` };
    expect(() => corsFromEnv(env)).toThrow(ConfigError);
    expect(() => corsFromEnv(env)).toThrow(/^invalid OCULUS_CORS_ORIGINS: /);
    expect(() => corsFromEnv(env)).toThrow(message);
  });
});

describe("OCULUS_TRUST_PROXY", () => {
  it("unset, empty or false: off", () => {
    expect(trustProxyFromEnv({})).toBe(false);
    expect(trustProxyFromEnv({ OCULUS_TRUST_PROXY: "" })).toBe(false);
    expect(trustProxyFromEnv({ OCULUS_TRUST_PROXY: "false" })).toBe(false);
    expect(trustProxyFromEnv({ OCULUS_TRUST_PROXY: " FALSE " })).toBe(false);
  });

  it("true: every proxy; a positive integer: that many hops", () => {
    expect(trustProxyFromEnv({ OCULUS_TRUST_PROXY: "true" })).toBe(true);
    expect(trustProxyFromEnv({ OCULUS_TRUST_PROXY: "True" })).toBe(true);
    expect(trustProxyFromEnv({ OCULUS_TRUST_PROXY: "1" })).toBe(1);
    expect(trustProxyFromEnv({ OCULUS_TRUST_PROXY: " 3 " })).toBe(3);
  });

  it("otherwise addresses and CIDR ranges, IPv4 and IPv6, which Fastify accepts", () => {
    const value = " 10.0.0.0/8, 192.168.1.7 ,::1,fd00::/8,,2001:db8::/128,fe80::1%eth0,1.0.0.0/1";
    const list = trustProxyFromEnv({ OCULUS_TRUST_PROXY: value });
    expect(list).toEqual([
      "10.0.0.0/8",
      "192.168.1.7",
      "::1",
      "fd00::/8",
      "2001:db8::/128",
      "fe80::1%eth0",
      "1.0.0.0/1",
    ]);
    // Fastify compiles the list when it is built, and throws on an entry it cannot read.
    expect(() => Fastify({ trustProxy: fastifyTrustProxy(list) })).not.toThrow();
  });

  it.each([
    ["zero hops", "0", /at least 1 \(false turns it off\), got "0"/],
    ["a host name", "proxy.internal", /"proxy\.internal" is not an IP address or CIDR range/],
    ["a bad address among good ones", "10.0.0.1,10.0.0.300", /"10\.0\.0\.300" is not an IP address/],
    ["a prefix too long for IPv4", "10.0.0.0/33", /"10\.0\.0\.0\/33" is not an IP address/],
    ["a prefix too long for IPv6", "fd00::/129", /"fd00::\/129" is not an IP address/],
    ["a zero prefix (true trusts every address)", "0.0.0.0/0", /"0\.0\.0\.0\/0" is not an IP address/],
    ["an empty prefix", "10.0.0.0/", /"10\.0\.0\.0\/" is not an IP address/],
    ["two prefixes", "10.0.0.0/8/8", /"10\.0\.0\.0\/8\/8" is not an IP address/],
    ["a negative number", "-1", /"-1" is not an IP address/],
    ["yes", "yes", /"yes" is not an IP address/],
    ["only commas", ",,", /",," is not an IP address/],
  ])("refuses %s with a ConfigError naming the variable and the entry", (_label, value, message) => {
    const env = { OCULUS_TRUST_PROXY: value };
    expect(() => trustProxyFromEnv(env)).toThrow(ConfigError);
    expect(() => trustProxyFromEnv(env)).toThrow(/^invalid OCULUS_TRUST_PROXY: /);
    expect(() => trustProxyFromEnv(env)).toThrow(message);
  });

  it("n hops: the socket's peer and the next n - 1 forwarded addresses are trusted as proxies", () => {
    const trust = fastifyTrustProxy(2);
    if (typeof trust !== "function") throw new Error("expected a trust function");
    expect([0, 1, 2, 3].map((hop) => trust("203.0.113.1", hop))).toEqual([true, true, false, false]);
    expect(fastifyTrustProxy(true)).toBe(true);
    expect(fastifyTrustProxy(false)).toBe(false);
    expect(fastifyTrustProxy(["10.0.0.0/8"])).toEqual(["10.0.0.0/8"]);
  });
});

describe("HTTP hardening settings (docs/security.md)", () => {
  it("unset: the documented defaults", () => {
    expect(httpHardeningFromEnv({})).toEqual({
      limits: {
        requestTimeoutMs: 30_000,
        headersTimeoutMs: 30_000,
        keepAliveTimeoutMs: 72_000,
        connectionTimeoutMs: 0,
        maxRequestsPerSocket: 0,
        maxConnections: 4096,
      },
      allowedHosts: [],
      authFailureLimit: { max: 60, windowMs: 60_000 },
      metricsCacheMs: 5000,
    });
    expect(DEFAULT_TRANSPORT_LIMITS.requestTimeoutMs).toBe(30_000);
  });

  it("each variable sets its value; 0 turns off those that may be off", () => {
    const settings = httpHardeningFromEnv({
      OCULUS_HTTP_REQUEST_TIMEOUT_MS: "60000",
      OCULUS_HTTP_HEADERS_TIMEOUT_MS: " 10000 ",
      OCULUS_HTTP_KEEP_ALIVE_TIMEOUT_MS: "5000",
      OCULUS_HTTP_CONNECTION_TIMEOUT_MS: "120000",
      OCULUS_HTTP_MAX_REQUESTS_PER_SOCKET: "100",
      OCULUS_HTTP_MAX_CONNECTIONS: "0",
      OCULUS_HTTP_ALLOWED_HOSTS: "Queue.Internal, 10.0.0.5,[fd00::1],build-box.",
      OCULUS_AUTH_FAILURE_LIMIT: "0",
      OCULUS_METRICS_CACHE_MS: "0",
    });
    expect(settings).toEqual({
      limits: {
        requestTimeoutMs: 60_000,
        headersTimeoutMs: 10_000,
        keepAliveTimeoutMs: 5000,
        connectionTimeoutMs: 120_000,
        maxRequestsPerSocket: 100,
        maxConnections: 0,
      },
      allowedHosts: ["queue.internal", "10.0.0.5", "fd00::1", "build-box"],
      authFailureLimit: false,
      metricsCacheMs: 0,
    });
    expect(authFailureLimitFromEnv({ OCULUS_AUTH_FAILURE_LIMIT: "10" })).toEqual({
      max: 10,
      windowMs: 60_000,
    });
    expect(metricsCacheFromEnv({ OCULUS_METRICS_CACHE_MS: "250" })).toBe(250);
  });

  it.each([
    [
      "OCULUS_HTTP_REQUEST_TIMEOUT_MS",
      "30s",
      /must be a whole number from 1000 ms to 3600000 ms, or 0 for none, got "30s"/,
    ],
    ["OCULUS_HTTP_REQUEST_TIMEOUT_MS", "500", /must be from 1000 ms to 3600000 ms, or 0 for none, got "500"/],
    ["OCULUS_HTTP_HEADERS_TIMEOUT_MS", "-1", /must be a whole number/],
    ["OCULUS_HTTP_KEEP_ALIVE_TIMEOUT_MS", "0", /must be from 1000 ms to 3600000 ms, got "0"/],
    ["OCULUS_HTTP_CONNECTION_TIMEOUT_MS", "1.5", /must be a whole number/],
    ["OCULUS_HTTP_MAX_REQUESTS_PER_SOCKET", "1e3", /must be a whole number/],
    ["OCULUS_HTTP_MAX_CONNECTIONS", "99999999", /must be from 1 to 1000000, or 0 for none/],
    ["OCULUS_HTTP_ALLOWED_HOSTS", "https://queue.internal", /"https:\/\/queue\.internal" is not a host name/],
    ["OCULUS_HTTP_ALLOWED_HOSTS", "queue.internal:8080", /"queue\.internal:8080" is not a host name/],
    ["OCULUS_HTTP_ALLOWED_HOSTS", "*.internal", /"\*\.internal" is not a host name/],
    ["OCULUS_HTTP_ALLOWED_HOSTS", ",,", /names no host/],
    ["OCULUS_AUTH_FAILURE_LIMIT", "many", /must be a whole number/],
    ["OCULUS_METRICS_CACHE_MS", "50", /must be from 100 ms to 3600000 ms, or 0 for none/],
  ])("%s=%s: a ConfigError naming the variable", (variable, value, message) => {
    const read = () => httpHardeningFromEnv({ [variable]: value });
    expect(read).toThrow(ConfigError);
    expect(read).toThrow(new RegExp(`^invalid ${variable}: `));
    expect(read).toThrow(message);
  });

  it("the headers timeout may not exceed the request timeout (Node refuses it)", () => {
    const env = { OCULUS_HTTP_REQUEST_TIMEOUT_MS: "10000", OCULUS_HTTP_HEADERS_TIMEOUT_MS: "20000" };
    expect(() => httpHardeningFromEnv(env)).toThrow(
      /^invalid OCULUS_HTTP_HEADERS_TIMEOUT_MS: 20000 ms must not exceed OCULUS_HTTP_REQUEST_TIMEOUT_MS \(10000 ms\)/,
    );
    // With the request timeout off, any headers timeout is fine.
    const off = { OCULUS_HTTP_REQUEST_TIMEOUT_MS: "0", OCULUS_HTTP_HEADERS_TIMEOUT_MS: "20000" };
    expect(httpHardeningFromEnv(off).limits.headersTimeoutMs).toBe(20_000);
  });

  it("a connection (idle) timeout must exceed the SSE heartbeat", () => {
    const limits = { ...DEFAULT_TRANSPORT_LIMITS, connectionTimeoutMs: 15_000 };
    expect(() => checkTransportLimits(limits, 15_000)).toThrow(
      /^invalid OCULUS_HTTP_CONNECTION_TIMEOUT_MS: /,
    );
    expect(() => checkTransportLimits({ ...limits, connectionTimeoutMs: 20_000 }, 15_000)).not.toThrow();
  });

  it("Host values: loopback names with any port, brackets and trailing dots handled", () => {
    expect(hostNameOf("localhost:8080")).toBe("localhost");
    expect(hostNameOf("LOCALHOST.")).toBe("localhost");
    expect(hostNameOf("[::1]:8080")).toBe("::1");
    expect(hostNameOf("127.0.0.1")).toBe("127.0.0.1");
    expect(hostNameOf("rebind.attacker.example:8080")).toBe("rebind.attacker.example");
  });
});

describe("credentials in logged URLs", () => {
  it("values of credential-like query parameters are replaced", () => {
    expect(redactQuery("/v1/events?access_token=abc&lastEventId=5")).toBe(
      "/v1/events?access_token=***&lastEventId=5",
    );
    expect(redactQuery("/v1/queue?token=abc&api_key=k&Password=p&limit=3")).toBe(
      "/v1/queue?token=***&api_key=***&Password=***&limit=3",
    );
    expect(redactQuery("/v1/queue?%74oken=abc")).toBe("/v1/queue?%74oken=***");
    expect(redactQuery("/v1/builds?status=queued")).toBe("/v1/builds?status=queued");
    expect(redactQuery("/v1/builds")).toBe("/v1/builds");
  });
});
