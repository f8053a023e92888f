/**
 * The result-retry policy (src/worker/result-reporter.ts) and the storable-output helpers
 * (src/core/build.ts): raw SQL errors are retried until the write goes through, stale-lease and
 * wrong-state refusals are final, and the warnings are rate-limited.
 */
import { Writable } from "node:stream";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { parseResult, storableText } from "../../src/core/build.js";
import {
  InvalidStateError,
  StaleLeaseError,
  StoreUnavailableError,
  ValidationError,
} from "../../src/core/errors.js";
import { reportUntilSettled, retryDelayMs } from "../../src/worker/result-reporter.js";

const FAST = { firstDelayMs: 1, maxDelayMs: 4, logEveryMs: 60_000 };

function capturingLogger() {
  const lines: { level: number; msg: string }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: pino({ level: "info" }, stream), lines };
}

const sqlError = (code: string, message: string) => Object.assign(new Error(message), { code });

describe("reportUntilSettled", () => {
  it("retries every error that is not a final refusal, typed or raw, until the write goes through", async () => {
    const failures = [
      sqlError("57014", "canceling statement due to statement timeout"),
      sqlError("40P01", "deadlock detected"),
      sqlError("25006", "cannot execute UPDATE in a read-only transaction"),
      sqlError("53300", "sorry, too many clients already"),
      new Error("timeout exceeded when trying to connect"),
      new StoreUnavailableError("PostgreSQL is unreachable"),
    ];
    let attempts = 0;
    const { logger, lines } = capturingLogger();
    const outcome = await reportUntilSettled(
      async () => {
        const failure = failures[attempts++];
        if (failure) throw failure;
      },
      { buildId: "b", what: "completion", logger, policy: FAST },
    );
    expect(outcome).toBe("recorded");
    expect(attempts).toBe(failures.length + 1);
    // One warning for the whole episode (rate-limited), one line when it went through.
    expect(lines.filter((l) => l.level === 40)).toHaveLength(1);
    expect(lines.map((l) => l.msg)).toContain("completion recorded after retries");
  });

  it.each([
    ["a stale lease", new StaleLeaseError("b", 1, 2, "queued")],
    ["a wrong state", new InvalidStateError("b", "completed", "fail", ["running"])],
    ["invalid input", new ValidationError("result", "bad")],
  ])("stops at %s: the write is refused for good", async (_what, err) => {
    let attempts = 0;
    const outcome = await reportUntilSettled(
      async () => {
        attempts++;
        throw err;
      },
      { buildId: "b", what: "failure", logger: capturingLogger().logger, policy: FAST },
    );
    expect(outcome).toBe("refused");
    expect(attempts).toBe(1);
  });

  it("gives up on a data exception (SQLSTATE class 22): the input itself cannot be stored", async () => {
    let attempts = 0;
    const outcome = await reportUntilSettled(
      async () => {
        attempts++;
        throw sqlError("22P05", "unsupported Unicode escape sequence");
      },
      { buildId: "b", what: "completion", logger: capturingLogger().logger, policy: FAST },
    );
    expect(outcome).toBe("unstorable");
    expect(attempts).toBe(1);
  });

  it("backs off exponentially up to the cap, with jitter", () => {
    const policy = { firstDelayMs: 100, maxDelayMs: 5000, logEveryMs: 30_000 };
    expect(retryDelayMs(1, policy, () => 0.5)).toBe(100);
    expect(retryDelayMs(4, policy, () => 0.5)).toBe(800);
    expect(retryDelayMs(50, policy, () => 0.5)).toBe(5000);
    expect(retryDelayMs(50, policy, () => 0)).toBe(3750);
  });
});

describe("storable output", () => {
  it("drops NUL characters and replaces lone surrogates in text", () => {
    expect(storableText("a\u0000b")).toBe("ab");
    expect(storableText("x\uD800y\uDC00z")).toBe("x\uFFFDy\uFFFDz");
    expect(storableText("pair \uD83D\uDE00 kept")).toBe("pair \uD83D\uDE00 kept");
  });

  it("accepts JSON values (toJSON applied, undefined fields dropped)", () => {
    const at = new Date("2026-01-01T00:00:00Z");
    expect(parseResult({ a: [1, "s", null, true], at, gone: undefined })).toEqual({
      a: [1, "s", null, true],
      at: "2026-01-01T00:00:00.000Z",
    });
    expect(parseResult(undefined)).toBeNull();
  });

  it.each([
    ["a NUL in a string", { text: "a\u0000" }, "result.text", "NUL"],
    ["a NUL in a key", { ["k\u0000"]: 1 }, "result key", "NUL"],
    ["a lone surrogate", { list: [1, "\uDC00"] }, "result.list[1]", "lone surrogate"],
    ["NaN", { n: Number.NaN }, "result.n", "not a JSON number"],
    ["a bigint", { big: 1n }, "result.big", "bigint"],
    ["a function", { f: () => 1 }, "result.f", "function"],
  ])("refuses %s, naming where and why", (_what, value, where, why) => {
    expect(() => parseResult(value)).toThrow(ValidationError);
    expect(() => parseResult(value)).toThrow(where);
    expect(() => parseResult(value)).toThrow(why);
  });

  it("refuses a cycle", () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => parseResult(cyclic)).toThrow("cycle");
  });
});
