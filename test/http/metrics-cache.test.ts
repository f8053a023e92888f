/**
 * /metrics costs O(1) store reads per scrape (src/http/metrics.ts): parallel scrapes share one count
 * of the builds table (single-flight), scrapes within the cache interval reuse it, and after the
 * interval the numbers are read again and correct. The store calls are counted with a spy on the
 * queue's methods (the real methods run: nothing is mocked).
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { sharedRead } from "../../src/http/metrics.js";
import { countBuilds, openTestApi, type TestApi } from "../helpers/api.js";
import { eventually } from "../helpers/queue.js";

// Long enough that 20 scrapes on a busy machine fit in one interval.
const CACHE_MS = 3000;

function gauge(text: string, line: string): number {
  const match = new RegExp(`^${line.replace(/[{}"]/g, "\\$&")} (\\S+)$`, "m").exec(text);
  if (!match?.[1]) throw new Error(`no ${line} in the scrape`);
  return Number(match[1]);
}

describe("/metrics store reads", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await openTestApi("metrics_cache", { metricsCacheMs: CACHE_MS });
    await api.queue.submitMany([{ strategyId: "m1" }, { strategyId: "m2" }]);
  });
  afterAll(() => api?.cleanup());

  it("20 parallel scrapes run one count of each kind; within the interval, none; after it, a fresh one", async () => {
    const statusCounts = vi.spyOn(api.queue, "statusCounts");
    const counts = vi.spyOn(api.queue, "counts");
    const workers = vi.spyOn(api.queue.workers, "list");
    // Start right after a read expires: wait out any cached value from before the spies.
    await new Promise((r) => setTimeout(r, CACHE_MS + 50));
    const scrapes = await Promise.all(Array.from({ length: 20 }, () => api.fetch("GET", "/metrics")));
    expect(scrapes.map((s) => s.status)).toEqual(Array(20).fill(200));
    expect(statusCounts).toHaveBeenCalledTimes(1);
    expect(counts).toHaveBeenCalledTimes(1);
    expect(workers).toHaveBeenCalledTimes(1);
    const total = await countBuilds(api.queue);
    for (const s of scrapes) expect(gauge(s.text, 'oculus_builds{status="queued"}')).toBe(total);

    // A build submitted now shows once the interval is over, read by one more count per interval.
    await api.queue.submit({ strategyId: "m3" });
    const calls = statusCounts.mock.calls.length;
    const started = Date.now();
    const text = await eventually(async () => {
      const s = await api.fetch("GET", "/metrics");
      // Each read keeps its own interval: they expire a few ms apart.
      const both =
        gauge(s.text, 'oculus_builds{status="queued"}') === total + 1 &&
        gauge(s.text, "oculus_queue_length") === total + 1;
      return both && s.text;
    });
    expect(gauge(text, 'oculus_builds{status="completed"}')).toBe(0);
    const intervals = Math.ceil((Date.now() - started) / CACHE_MS) + 1;
    expect(statusCounts.mock.calls.length - calls).toBeLessThanOrEqual(intervals);
    statusCounts.mockRestore();
    counts.mockRestore();
    workers.mockRestore();
  });
});

describe("sharedRead", () => {
  it("one read in flight for every caller; kept for the TTL; a failure is not kept", async () => {
    let now = 0;
    let reads = 0;
    let fail = false;
    let release: () => void = () => undefined;
    const read = sharedRead(
      () =>
        new Promise<number>((resolve, reject) => {
          reads += 1;
          release = () => (fail ? reject(new Error("store down")) : resolve(reads));
        }),
      5000,
      () => now,
    );
    const first = [read(), read(), read()];
    release();
    expect(await Promise.all(first)).toEqual([1, 1, 1]);
    now = 4999;
    expect(await read()).toBe(1);
    expect(reads).toBe(1);
    now = 5000;
    fail = true;
    const failing = read();
    release();
    await expect(failing).rejects.toThrow("store down");
    fail = false;
    const again = read();
    release();
    expect(await again).toBe(3);
    expect(reads).toBe(3);
  });

  it("TTL 0: shared only while in flight", async () => {
    let reads = 0;
    const read = sharedRead(async () => ++reads, 0);
    expect(await Promise.all([read(), read()])).toEqual([1, 1]);
    expect(await read()).toBe(2);
  });
});
