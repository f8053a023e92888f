/**
 * The start-up wait's policy (src/queue/open-with-retry.ts), without servers: which failures are
 * waited out and which stop at once, the backoff's bound, the lines it prints, and a prompt abort.
 * The behaviour against a real PostgreSQL that is stopped and started again is in
 * test/integration/start-waits-for-postgres.test.ts.
 */
import { describe, expect, it } from "vitest";
import { OculusError, StoreUnavailableError } from "../../src/core/errors.js";
import { classifyOpenError, OpenAborted, reasonOf, retryOpen } from "../../src/queue/open-with-retry.js";

const withCode = (message: string, code: string, extra: Record<string, unknown> = {}) =>
  Object.assign(new Error(message), { code, ...extra });

describe("classifyOpenError", () => {
  it("waits out an unreachable or passing refusal", () => {
    for (const err of [
      withCode("connect ECONNREFUSED 127.0.0.1:5432", "ECONNREFUSED"),
      withCode("getaddrinfo ENOTFOUND db", "ENOTFOUND"),
      withCode("the database system is starting up", "57P03"),
      withCode("the database system is shutting down", "57P03"),
      withCode("terminating connection due to administrator command", "57P01"),
      withCode("cannot execute CREATE SCHEMA in a read-only transaction", "25006"),
      withCode("sorry, too many clients already", "53300"),
      withCode("connection failure", "08006"),
      withCode("connect ENOENT /var/run/postgresql/.s.PGSQL.5432", "ENOENT", { syscall: "connect" }),
      new Error("Connection terminated unexpectedly"),
      new StoreUnavailableError("PostgreSQL is unreachable: x", withCode("x", "ECONNRESET")),
      new OculusError("store_unavailable", 503, "PostgreSQL is read-only"),
    ]) {
      expect(classifyOpenError(err), err.message).toBe("unreachable");
    }
  });

  it("stops at once on a mistake in the configuration, and on anything unknown", () => {
    for (const err of [
      withCode('password authentication failed for user "oculus"', "28P01"),
      withCode('role "nobody" does not exist', "28000"),
      withCode('database "nope" does not exist', "3D000"),
      withCode("permission denied for database test", "42501"),
    ]) {
      expect(classifyOpenError(err), err.message).toBe("misconfigured");
    }
    expect(
      classifyOpenError(new Error("database schema oculus is at migration 9, newer than this version knows")),
    ).toBe("other");
    expect(classifyOpenError(withCode("ENOENT: no such file", "ENOENT", { syscall: "open" }))).toBe("other");
  });

  it("names the driver's reason, not the wrapper's", () => {
    const wrapped = new StoreUnavailableError(
      "PostgreSQL is unreachable: the database system is starting up",
      withCode("the database system is starting up", "57P03"),
    );
    expect(reasonOf(wrapped)).toBe("the database system is starting up (57P03)");
    const both = Object.assign(
      new AggregateError(
        [new Error("connect ECONNREFUSED ::1:5432"), new Error("connect ECONNREFUSED 127.0.0.1:5432")],
        "",
      ),
      {
        code: "ECONNREFUSED",
      },
    );
    expect(reasonOf(both)).toBe("connect ECONNREFUSED ::1:5432; connect ECONNREFUSED 127.0.0.1:5432");
    expect(reasonOf(withCode("cannot execute CREATE SCHEMA in a read-only transaction", "25006"))).toMatch(
      /read-only \(a standby\?\)$/,
    );
  });
});

class Opened {
  closed = false;
  async close() {
    this.closed = true;
  }
}

describe("retryOpen", () => {
  const refused = () => withCode("connect ECONNREFUSED 127.0.0.1:5999", "ECONNREFUSED");

  it("retries with a doubling pause up to its bound, prints the first failure and a change, then opens", async () => {
    const lines: string[] = [];
    const attemptsAt: number[] = [];
    let attempts = 0;
    const opened = await retryOpen(
      async () => {
        attemptsAt.push(performance.now());
        attempts += 1;
        if (attempts <= 3) throw refused();
        if (attempts <= 6) throw withCode("the database system is starting up", "57P03");
        return new Opened();
      },
      "PostgreSQL at postgres://x/db",
      { report: (l) => lines.push(l), retry: { initialDelayMs: 5, maxDelayMs: 20, reportEveryMs: 60_000 } },
    );
    expect(opened).toBeInstanceOf(Opened);
    expect(attempts).toBe(7);
    expect(lines).toHaveLength(3);
    expect(lines[0]).toBe(
      "waiting for PostgreSQL at postgres://x/db: connect ECONNREFUSED 127.0.0.1:5999 (attempt 1); next try in 5 ms",
    );
    expect(lines[1]).toMatch(
      /: the database system is starting up \(57P03\) \(attempt 4, waiting [\d.]+ m?s so far\)/,
    );
    expect(lines[2]).toMatch(
      /^PostgreSQL at postgres:\/\/x\/db answers: queue open after [\d.]+ m?s \(7 attempts\)$/,
    );
    // Each pause is at least the policy's (5, 10, 20, 20...): the bound is what the timers wait.
    const gaps = attemptsAt.slice(1).map((t, i) => t - (attemptsAt[i] ?? t));
    expect(gaps[0]).toBeGreaterThanOrEqual(4);
    expect(gaps[3]).toBeGreaterThanOrEqual(19);
  });

  it("rethrows a misconfiguration at once, without printing", async () => {
    const lines: string[] = [];
    let attempts = 0;
    const denied = withCode('password authentication failed for user "x"', "28P01");
    await expect(
      retryOpen(
        async () => {
          attempts += 1;
          throw denied;
        },
        "PostgreSQL",
        { report: (l) => lines.push(l) },
      ),
    ).rejects.toBe(denied);
    expect(attempts).toBe(1);
    expect(lines).toEqual([]);
  });

  it("an abort ends the wait at once, and closes what an attempt in flight opens later", async () => {
    const controller = new AbortController();
    const sleeping = retryOpen(
      async () => {
        throw refused();
      },
      "PostgreSQL",
      { signal: controller.signal, report: () => undefined, retry: { initialDelayMs: 60_000 } },
    );
    setTimeout(() => controller.abort(), 10);
    await expect(sleeping).rejects.toBeInstanceOf(OpenAborted);

    const late = new Opened();
    let finish: (o: Opened) => void = () => undefined;
    const second = new AbortController();
    const inFlight = retryOpen(
      () =>
        new Promise<Opened>((resolve) => {
          finish = resolve;
        }),
      "PostgreSQL",
      { signal: second.signal, report: () => undefined },
    );
    second.abort();
    await expect(inFlight).rejects.toBeInstanceOf(OpenAborted);
    finish(late);
    await new Promise((r) => setTimeout(r, 0));
    expect(late.closed).toBe(true);
  });
});
