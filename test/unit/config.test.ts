import { describe, expect, it } from "vitest";
import { loadConfig, redactUrl } from "../../src/core/config.js";
import { ConfigError } from "../../src/core/errors.js";

describe("configuration", () => {
  it("defaults to the embedded store, no Redis and the oculus prefix", () => {
    const c = loadConfig({}, {});
    expect(c.databaseUrl).toBeUndefined();
    expect(c.redisUrl).toBeUndefined();
    expect(c.prefix).toBe("oculus");
    expect(c.schema).toBe("oculus");
    expect(c.dataDir.endsWith(".oculus")).toBe(true);
  });

  it("reads the environment, and flags win over it", () => {
    const env = { DATABASE_URL: "postgres://a@h/db", REDIS_URL: "redis://h:1", OCULUS_PREFIX: "env" };
    expect(loadConfig({}, env)).toMatchObject({
      databaseUrl: env.DATABASE_URL,
      redisUrl: env.REDIS_URL,
      prefix: "env",
    });
    expect(loadConfig({ prefix: "{flag}" }, env).prefix).toBe("{flag}");
  });

  it("treats an empty variable as unset", () => {
    expect(loadConfig({}, { REDIS_URL: "" }).redisUrl).toBeUndefined();
  });

  it.each([
    [{ databaseUrl: "mysql://x" }, {}, /--database-url.*DATABASE_URL.*postgres/],
    [{}, { DATABASE_URL: "nope" }, /invalid DATABASE_URL/],
    [{}, { REDIS_URL: "http://x" }, /invalid REDIS_URL.*redis:\/\//],
    [{ prefix: "has space" }, {}, /invalid --prefix/],
    [{}, { OCULUS_PREFIX: "x".repeat(65) }, /OCULUS_PREFIX/],
    [{ schema: "Drop Table" }, {}, /--schema/],
    [{ reconcileIntervalMs: 5 }, {}, /at least 100 ms/],
  ])("refuses a bad value with a message naming it (%j %j)", (flags, env, message) => {
    expect(() => loadConfig(flags, env)).toThrow(ConfigError);
    expect(() => loadConfig(flags, env)).toThrow(message);
  });

  it("never prints a password", () => {
    expect(redactUrl("postgres://user:secret@host/db")).not.toContain("secret");
  });
});
