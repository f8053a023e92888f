/**
 * The per-run progress throttle: one write per interval, always of the newest value; every call
 * resolves (or rejects) with the write that carried its value or a newer one.
 */
import { describe, expect, it } from "vitest";
import { ProgressThrottle } from "../../src/queue/progress-throttle.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("ProgressThrottle", () => {
  it("writes the first value at once and coalesces a burst into one trailing write of the newest", async () => {
    const throttle = new ProgressThrottle(50);
    const written: number[] = [];
    const calls = [1, 2, 3, 4, 5].map((n) =>
      throttle.report("run", async () => {
        written.push(n);
      }),
    );
    await Promise.all(calls);
    expect(written).toEqual([1, 5]);
  });

  it("keeps runs apart", async () => {
    const throttle = new ProgressThrottle(50);
    const written: string[] = [];
    await Promise.all([
      throttle.report("a", async () => void written.push("a1")),
      throttle.report("b", async () => void written.push("b1")),
    ]);
    expect(written.sort()).toEqual(["a1", "b1"]);
  });

  it("rejects every caller whose value a failed write carried", async () => {
    const throttle = new ProgressThrottle(30);
    const stale = new Error("stale lease");
    await throttle.report("run", async () => undefined);
    const second = throttle.report("run", async () => {
      throw stale;
    });
    const third = throttle.report("run", async () => {
      throw stale;
    });
    await expect(second).rejects.toBe(stale);
    await expect(third).rejects.toBe(stale);
  });

  it("flush writes the pending value now, before the interval ends", async () => {
    const throttle = new ProgressThrottle(10_000);
    const written: number[] = [];
    await throttle.report("run", async () => void written.push(1));
    const pending = throttle.report("run", async () => void written.push(2));
    await sleep(10);
    expect(written).toEqual([1]);
    await throttle.flush("run");
    await pending;
    expect(written).toEqual([1, 2]);
  });

  it("writes at most once per interval under a steady stream", async () => {
    const throttle = new ProgressThrottle(40);
    const writes: number[] = [];
    const calls: Promise<void>[] = [];
    const start = Date.now();
    while (Date.now() - start < 200) {
      calls.push(throttle.report("run", async () => void writes.push(Date.now())));
      await sleep(2);
    }
    await Promise.all(calls);
    for (let i = 1; i < writes.length; i++) {
      expect((writes[i] ?? 0) - (writes[i - 1] ?? 0)).toBeGreaterThanOrEqual(39);
    }
    expect(writes.length).toBeLessThan(calls.length);
  });
});
