import { describe, expect, it } from "vitest";
import { Backoff, LogThrottle } from "../../src/core/log-throttle.js";
import type { Logger } from "../../src/core/logger.js";

function recordingLogger() {
  const lines: { level: string; fields: Record<string, unknown>; msg: string }[] = [];
  const at = (level: string) => (fields: Record<string, unknown>, msg: string) =>
    lines.push({ level, fields, msg });
  return { lines, logger: { warn: at("warn"), info: at("info"), error: at("error") } as unknown as Logger };
}

describe("LogThrottle", () => {
  it("logs the first line of a kind, then one per interval with the count left out", () => {
    let now = 0;
    const { lines, logger } = recordingLogger();
    const throttle = new LogThrottle(logger, 30_000, () => now);
    expect(throttle.warn("probe", { err: "OOM" }, "probe failed")).toBe(true);
    for (let i = 0; i < 5; i++) {
      now += 1000;
      expect(throttle.warn("probe", { err: "OOM" }, "probe failed")).toBe(false);
    }
    // Another kind is not held back by this one.
    expect(throttle.warn("reconcile", {}, "reconcile failed")).toBe(true);
    now = 30_000;
    expect(throttle.warn("probe", { err: "OOM" }, "probe failed")).toBe(true);
    expect(lines.map((l) => [l.msg, l.fields.suppressed])).toEqual([
      ["probe failed", undefined],
      ["reconcile failed", undefined],
      ["probe failed", 5],
    ]);
  });

  it("logs at once again after a reset (the fault ended)", () => {
    const { lines, logger } = recordingLogger();
    const throttle = new LogThrottle(logger, 30_000, () => 0);
    throttle.warn("down", {}, "down");
    throttle.warn("down", {}, "down");
    throttle.reset("down");
    throttle.warn("down", {}, "down");
    expect(lines).toHaveLength(2);
  });
});

describe("Backoff", () => {
  it("doubles from the initial delay up to the cap, and starts over after a reset", () => {
    const backoff = new Backoff(500, 30_000);
    const delays: number[] = [];
    for (let i = 0; i < 9; i++) {
      delays.push(backoff.delayMs);
      backoff.failed();
    }
    expect(delays).toEqual([500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
    backoff.reset();
    expect(backoff.delayMs).toBe(500);
  });
});
