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
    [
      {},
      { DATABASE_URL: "postgres://u:p@db1:5432,db2:5432/oculus?target_session_attrs=read-write" },
      /invalid DATABASE_URL.*names several hosts.*virtual IP or a proxy/,
    ],
    [{}, { REDIS_URL: "http://x" }, /invalid REDIS_URL.*redis:\/\//],
    [{ prefix: "has space" }, {}, /invalid --prefix/],
    [{}, { OCULUS_PREFIX: "x".repeat(65) }, /OCULUS_PREFIX/],
    [{ schema: "Drop Table" }, {}, /--schema/],
    [{ reconcileIntervalMs: 5 }, {}, /at least 100 ms/],
  ])("refuses a bad value with a message naming it (%j %j)", (flags, env, message) => {
    expect(() => loadConfig(flags, env)).toThrow(ConfigError);
    expect(() => loadConfig(flags, env)).toThrow(message);
  });

  it("PostgreSQL timeouts: defaults, the environment, and a query timeout derived from the statement timeout", () => {
    expect(loadConfig({}, {})).toMatchObject({
      pgConnectTimeoutMs: 5000,
      pgStatementTimeoutMs: 30_000,
      pgIdleInTransactionTimeoutMs: 60_000,
      pgQueryTimeoutMs: 35_000,
      pgMaxWaiting: 1000,
      pgClaimTimeoutMs: 3000,
    });
    const env = {
      OCULUS_PG_CONNECT_TIMEOUT_MS: "2000",
      OCULUS_PG_STATEMENT_TIMEOUT_MS: "10000",
      OCULUS_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS: "0",
      OCULUS_PG_MAX_WAITING: "50",
      OCULUS_PG_CLAIM_TIMEOUT_MS: "1500",
    };
    expect(loadConfig({}, env)).toMatchObject({
      pgConnectTimeoutMs: 2000,
      pgStatementTimeoutMs: 10_000,
      pgIdleInTransactionTimeoutMs: 0,
      pgQueryTimeoutMs: 15_000,
      pgMaxWaiting: 50,
      pgClaimTimeoutMs: 1500,
    });
    expect(loadConfig({}, { OCULUS_PG_STATEMENT_TIMEOUT_MS: "0" }).pgQueryTimeoutMs).toBe(0);
    expect(loadConfig({ pgQueryTimeoutMs: 40_000 }, {}).pgQueryTimeoutMs).toBe(40_000);
  });

  it.each([
    [{}, { OCULUS_PG_CONNECT_TIMEOUT_MS: "0" }, /OCULUS_PG_CONNECT_TIMEOUT_MS.*at least 100 ms/],
    [{}, { OCULUS_PG_STATEMENT_TIMEOUT_MS: "50" }, /OCULUS_PG_STATEMENT_TIMEOUT_MS.*or 0: none/],
    [{}, { OCULUS_PG_MAX_WAITING: "-1" }, /OCULUS_PG_MAX_WAITING/],
    [{}, { OCULUS_PG_CLAIM_TIMEOUT_MS: "fast" }, /OCULUS_PG_CLAIM_TIMEOUT_MS/],
    [{}, { OCULUS_PG_QUERY_TIMEOUT_MS: "20000" }, /QUERY_TIMEOUT_MS.*must be above.*STATEMENT_TIMEOUT_MS/],
  ])("refuses a bad PostgreSQL setting (%j %j)", (flags, env, message) => {
    expect(() => loadConfig(flags, env)).toThrow(ConfigError);
    expect(() => loadConfig(flags, env)).toThrow(message);
  });

  it("never prints a password", () => {
    expect(redactUrl("postgres://user:secret@host/db")).not.toContain("secret");
  });
});
