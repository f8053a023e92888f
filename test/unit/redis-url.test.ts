/**
 * REDIS_URL: the three topologies parse to what the client factory needs; a malformed URL is refused
 * with a message naming what is wrong; on a Cluster the prefix must carry a hash tag.
 */
import { describe, expect, it } from "vitest";
import { loadConfig, redactUrl } from "../../src/core/config.js";
import { ConfigError } from "../../src/core/errors.js";
import {
  checkPrefixForTopology,
  describeRedisTarget,
  hashTagOf,
  parseRedisUrl,
  RedisUrlError,
} from "../../src/core/redis-url.js";
import { isRedisFailoverError } from "../../src/redis/connection.js";
import { redisKeys } from "../../src/redis/keys.js";

describe("parseRedisUrl", () => {
  it("reads one server, with credentials, database and TLS", () => {
    expect(parseRedisUrl("redis://127.0.0.1:6380/2")).toMatchObject({
      topology: "standalone",
      tls: false,
      nodes: [{ host: "127.0.0.1", port: 6380 }],
      db: 2,
      username: undefined,
      password: undefined,
    });
    expect(parseRedisUrl("rediss://u:p%40ss@h")).toMatchObject({
      topology: "standalone",
      tls: true,
      nodes: [{ host: "h", port: 6379 }],
      username: "u",
      password: "p@ss",
    });
    expect(parseRedisUrl("redis://:secret@[::1]:7000").nodes).toEqual([{ host: "::1", port: 7000 }]);
    expect(parseRedisUrl("redis://:secret@h").password).toBe("secret");
  });

  it("reads a Sentinel URL: sentinels (port 26379 by default), database, master name", () => {
    const t = parseRedisUrl("redis-sentinel://:pw@s1:26380,s2,s3:26382/1#mymaster");
    expect(t).toMatchObject({
      topology: "sentinel",
      tls: false,
      nodes: [
        { host: "s1", port: 26380 },
        { host: "s2", port: 26379 },
        { host: "s3", port: 26382 },
      ],
      password: "pw",
      db: 1,
      masterName: "mymaster",
    });
    expect(parseRedisUrl("rediss-sentinel://s1:1#m").tls).toBe(true);
    expect(parseRedisUrl("redis-sentinel://s1:1?sentinelPassword=sp#m").sentinelPassword).toBe("sp");
    expect(describeRedisTarget(t)).toBe('Sentinel master "mymaster" via s1:26380,s2:26379,s3:26382');
  });

  it("reads a Cluster URL: seed nodes", () => {
    const t = parseRedisUrl("redis-cluster://a:7000,b:7001");
    expect(t).toMatchObject({
      topology: "cluster",
      nodes: [
        { host: "a", port: 7000 },
        { host: "b", port: 7001 },
      ],
      db: 0,
    });
    expect(parseRedisUrl("rediss-cluster://u:p@a:7000").tls).toBe(true);
  });

  it.each([
    ["http://h:1", /unknown scheme "http:\/\/".*redis-sentinel:\/\//],
    ["h:6379", /not a URL/],
    ["redis://", /no host/],
    ["redis://h:port", /port must be a number/],
    ["redis://h:70000", /port must be a number from 1 to 65535/],
    ["redis://h/x", /database "\/x" must be a number/],
    ["redis://a:1,b:2", /2 hosts in a redis:\/\/ URL: use redis-sentinel:\/\/.*redis-cluster:\/\//],
    ["redis://h#m", /only belongs in a redis-sentinel/],
    ["redis-sentinel://s1:1,s2:2", /needs the master group name after "#"/],
    ["redis-sentinel://s1:1#", /needs the master group name/],
    ["redis-sentinel://s1:1,,s2:2#m", /host 2 is empty/],
    ["redis-cluster://a:1/3", /only database 0/],
    ["redis://:%E0%A4%A@h", /password is not valid percent-encoding/],
  ])("refuses %s", (url, message) => {
    expect(() => parseRedisUrl(url)).toThrow(RedisUrlError);
    expect(() => parseRedisUrl(url)).toThrow(message);
  });
});

describe("REDIS_URL in the configuration", () => {
  it("accepts the three topologies and names the problem of a bad one", () => {
    expect(loadConfig({}, { REDIS_URL: "redis-sentinel://s:1#m" }).redisUrl).toBe("redis-sentinel://s:1#m");
    expect(() => loadConfig({}, { REDIS_URL: "redis-sentinel://s:1" })).toThrow(
      /invalid REDIS_URL \(--redis-url \/ REDIS_URL\): a Sentinel URL needs the master group name/,
    );
    expect(() => loadConfig({ redisUrl: "redis://h:x" }, {})).toThrow(/invalid --redis-url.*port/);
  });

  it("defaults the prefix to {oculus} on a Cluster, oculus elsewhere", () => {
    expect(loadConfig({}, { REDIS_URL: "redis-cluster://a:1" }).prefix).toBe("{oculus}");
    expect(loadConfig({}, { REDIS_URL: "redis-sentinel://a:1#m" }).prefix).toBe("oculus");
    expect(loadConfig({}, {}).prefix).toBe("oculus");
    expect(loadConfig({ prefix: "q{ci}" }, { REDIS_URL: "redis-cluster://a:1" }).prefix).toBe("q{ci}");
  });

  it("refuses a Cluster prefix without a hash tag, giving the fix", () => {
    const load = () => loadConfig({}, { REDIS_URL: "redis-cluster://a:1", OCULUS_PREFIX: "ci" });
    expect(load).toThrow(ConfigError);
    expect(load).toThrow(/prefix "ci".*Redis Cluster: it must carry a hash tag.*use "\{ci\}"/);
    expect(() => checkPrefixForTopology("x{}", "cluster")).toThrow(/use "\{x\}"/);
    expect(() => checkPrefixForTopology("oculus", "sentinel")).not.toThrow();
  });

  it("finds the hash tag as Redis does (first { to the next }, not empty)", () => {
    expect(hashTagOf("{oculus}")).toBe("oculus");
    expect(hashTagOf("a{b}c{d}")).toBe("b");
    expect(hashTagOf("{}x")).toBeUndefined();
    expect(hashTagOf("{x")).toBeUndefined();
    expect(hashTagOf("oculus")).toBeUndefined();
  });

  it("puts every key and channel of a hash-tag prefix in the tag's slot", () => {
    for (const key of Object.values(redisKeys("{oculus}"))) expect(hashTagOf(key)).toBe("oculus");
  });

  it("redacts the password of every form", () => {
    expect(redactUrl("redis-sentinel://u:secret@s1:1,s2:2/0#m")).not.toContain("secret");
    expect(redactUrl("redis-cluster://:secret@a:1,b:2")).toBe("redis-cluster://:***@a:1,b:2");
    expect(redactUrl("redis-sentinel://s:1?sentinelPassword=secret#m")).not.toContain("secret");
    expect(redactUrl("redis-sentinel://a:1,b:2?sentinelPassword=secret#m")).not.toContain("secret");
    expect(redactUrl("redis-sentinel://a:1,b:2#m")).toBe("redis-sentinel://a:1,b:2#m");
  });
});

describe("isRedisFailoverError", () => {
  it("knows the replies of a demoted, loading or split node", () => {
    for (const m of [
      "READONLY You can't write against a read only replica.",
      "LOADING Redis is loading the dataset in memory",
      "CLUSTERDOWN The cluster is down",
      "TRYAGAIN Multiple keys request during rehashing of slot",
      "MASTERDOWN Link with MASTER is down",
    ]) {
      expect(isRedisFailoverError(new Error(m))).toBe(true);
    }
    expect(isRedisFailoverError(new Error("ERR syntax error"))).toBe(false);
  });
});
