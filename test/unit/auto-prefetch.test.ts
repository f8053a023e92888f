import { describe, expect, it } from "vitest";
import { AutoPrefetch } from "../../src/worker/auto-prefetch.js";

describe("prefetch auto (src/worker/auto-prefetch.ts)", () => {
  it("prefetches nothing until it has seen a claim and a finished build", () => {
    const auto = new AutoPrefetch(50);
    expect(auto.current(0)).toBe(0);
    auto.observeClaim(5);
    expect(auto.current(0)).toBe(0);
    auto.observeRun(0.05);
    expect(auto.current(0)).toBe(100);
  });

  it("holds what the slots finish during one claim, at most twice the concurrency", () => {
    const auto = new AutoPrefetch(10);
    auto.observeClaim(4);
    auto.observeRun(2);
    // 10 slots x 4 ms claim / 2 ms per build
    expect(auto.current(0)).toBe(20);
    const short = new AutoPrefetch(10);
    short.observeClaim(4);
    short.observeRun(1);
    expect(short.current(0)).toBe(20);
    const capped = new AutoPrefetch(10, 5);
    capped.observeClaim(4);
    capped.observeRun(1);
    expect(capped.current(0)).toBe(5);
  });

  it("prefetches nothing for builds of a second or more, at any concurrency below 200", () => {
    for (const concurrency of [1, 4, 50, 199]) {
      const auto = new AutoPrefetch(concurrency);
      auto.observeClaim(5);
      auto.observeRun(1000);
      expect(auto.current(0)).toBe(0);
    }
  });

  it("stops at once while a handler has run long, before that build ends", () => {
    const auto = new AutoPrefetch(50);
    auto.observeClaim(5);
    for (let i = 0; i < 20; i++) auto.observeRun(0.1);
    expect(auto.current(0)).toBe(100);
    expect(auto.current(2000)).toBe(0);
  });

  it("follows a change of run time as a moving average", () => {
    const auto = new AutoPrefetch(10);
    auto.observeClaim(10);
    auto.observeRun(1);
    expect(auto.current(0)).toBe(20);
    // The builds become a hundred times longer: the prefetch falls to nothing within a few.
    const seen: number[] = [];
    for (let i = 0; i < 30; i++) {
      auto.observeRun(100);
      seen.push(auto.current(0));
    }
    expect(seen.at(-1)).toBe(1);
    expect(seen.every((n, i) => i === 0 || n <= (seen[i - 1] as number))).toBe(true);
  });
});
