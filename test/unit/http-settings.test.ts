/**
 * The HTTP API's operator settings read from the environment: OCULUS_CORS_ORIGINS and
 * OCULUS_TRUST_PROXY. A bad value is a ConfigError (exit 2) naming the variable and the bad entry.
 */
import Fastify from "fastify";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/core/errors.js";
import { corsFromEnv } from "../../src/http/cors.js";
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
