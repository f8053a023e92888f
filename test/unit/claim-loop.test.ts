import { describe, expect, it } from "vitest";
import type { ClaimedBuild } from "../../src/core/build.js";
import { runClaimLoop } from "../../src/worker/claim-loop.js";

const fakeBuild = (n: number) => ({ id: `b${n}`, lease: 1 }) as unknown as ClaimedBuild;

describe("claim loop (storage-free)", () => {
  it("never runs more than its concurrency, fails thrown builds, completes the rest", async () => {
    const pending = Array.from({ length: 40 }, (_, i) => fakeBuild(i));
    const completed: string[] = [];
    const failed: string[] = [];
    let active = 0;
    let maxActive = 0;
    const controller = new AbortController();
    await runClaimLoop(
      {
        claim: async (n) => pending.splice(0, n),
        wait: async () => {
          if (pending.length === 0) controller.abort();
        },
        complete: async (b) => completed.push(b.id),
        fail: async (b, err) => failed.push(`${b.id}:${err.message}`),
      },
      async (build) => {
        active++;
        maxActive = Math.max(maxActive, active);
        await new Promise((r) => setTimeout(r, 2));
        active--;
        if (build.id.endsWith("7")) throw new Error("boom");
        return null;
      },
      { concurrency: 5, signal: controller.signal },
    );
    expect(maxActive).toBeLessThanOrEqual(5);
    expect(completed.length + failed.length).toBe(40);
    expect(failed).toContain("b7:boom");
  });

  it("keeps going when claiming throws", async () => {
    let calls = 0;
    const errors: unknown[] = [];
    const controller = new AbortController();
    await runClaimLoop(
      {
        claim: async () => {
          calls++;
          if (calls < 3) throw new Error("store down");
          controller.abort();
          return [];
        },
        wait: async () => undefined,
        complete: async () => undefined,
        fail: async () => undefined,
        onError: (err) => errors.push(err),
      },
      async () => null,
      { concurrency: 1, signal: controller.signal },
    );
    expect(errors).toHaveLength(2);
  });

  it("prefetches: claims ahead of free slots in batches, runs at most its concurrency, in claim order", async () => {
    const pending = Array.from({ length: 60 }, (_, i) => fakeBuild(i));
    const claimSizes: number[] = [];
    const started: string[] = [];
    let active = 0;
    let maxActive = 0;
    let held = 0;
    let maxHeld = 0;
    const controller = new AbortController();
    await runClaimLoop(
      {
        claim: async (n) => {
          const taken = pending.splice(0, n);
          claimSizes.push(taken.length);
          held += taken.length;
          maxHeld = Math.max(maxHeld, held);
          return taken;
        },
        wait: async () => {
          if (pending.length === 0) controller.abort();
        },
        complete: async () => {
          held--;
        },
        fail: async () => undefined,
        release: async () => undefined,
      },
      async (build) => {
        started.push(build.id);
        active++;
        maxActive = Math.max(maxActive, active);
        await new Promise((r) => setTimeout(r, 2));
        active--;
        return null;
      },
      { concurrency: 4, prefetch: 6, signal: controller.signal },
    );
    expect(maxActive).toBe(4);
    expect(started).toEqual(Array.from({ length: 60 }, (_, i) => `b${i}`));
    // The first claim fills slots and prefetch; later ones wait until at least `prefetch` fit.
    expect(claimSizes[0]).toBe(10);
    // (the last one takes what is left)
    const taken = claimSizes.filter((n) => n > 0);
    expect(taken.slice(0, -1).every((n) => n >= 6)).toBe(true);
    expect(maxHeld).toBeLessThanOrEqual(4 + 6 + 4);
  });

  it("releases the prefetched builds that never started when it stops, and reports the rest", async () => {
    const controller = new AbortController();
    const completed: string[] = [];
    const released: string[] = [];
    let claims = 0;
    let unblock: () => void = () => undefined;
    const blocked = new Promise<void>((r) => {
      unblock = r;
    });
    let started = 0;
    let bothStarted: () => void = () => undefined;
    const slotsFull = new Promise<void>((r) => {
      bothStarted = r;
    });
    const loop = runClaimLoop(
      {
        claim: async (n) => {
          claims++;
          return claims === 1 ? Array.from({ length: n }, (_, i) => fakeBuild(i)) : [];
        },
        wait: (_ms, signal) =>
          new Promise((r) => {
            signal.addEventListener("abort", () => r(), { once: true });
          }),
        complete: async (b) => completed.push(b.id),
        fail: async () => undefined,
        release: async (builds) => released.push(...builds.map((b) => b.id)),
      },
      async () => {
        started++;
        if (started === 2) bothStarted();
        await blocked;
        return null;
      },
      { concurrency: 2, prefetch: 3, signal: controller.signal },
    );
    // Both slots busy: the other three claimed builds wait in the loop.
    await slotsFull;
    controller.abort();
    unblock();
    await loop;
    expect(completed.sort()).toEqual(["b0", "b1"]);
    expect(released).toEqual(["b2", "b3", "b4"]);
  });

  it('prefetch "auto": builds far shorter than a claim are claimed ahead of the slots, in order', async () => {
    const pending = Array.from({ length: 400 }, (_, i) => fakeBuild(i));
    const claimSizes: number[] = [];
    const started: string[] = [];
    let active = 0;
    let maxActive = 0;
    const controller = new AbortController();
    await runClaimLoop(
      {
        // A claim's round trip (a few ms) against handlers that return at once.
        claim: async (n) => {
          claimSizes.push(n);
          await new Promise((r) => setTimeout(r, 3));
          return pending.splice(0, n);
        },
        wait: async () => {
          if (pending.length === 0) controller.abort();
        },
        complete: async () => undefined,
        fail: async () => undefined,
        release: async () => undefined,
      },
      async (build) => {
        started.push(build.id);
        active++;
        maxActive = Math.max(maxActive, active);
        await Promise.resolve();
        active--;
        return null;
      },
      { concurrency: 4, prefetch: "auto", signal: controller.signal },
    );
    expect(started).toEqual(Array.from({ length: 400 }, (_, i) => `b${i}`));
    expect(maxActive).toBeLessThanOrEqual(4);
    // The first claim knows nothing yet: only the free slots. Later ones ask for slots + prefetch
    // (at most twice the concurrency ahead).
    expect(claimSizes[0]).toBe(4);
    expect(Math.max(...claimSizes)).toBe(4 + 8);
  });

  it('prefetch "auto": builds longer than a claim are never claimed ahead of free slots', async () => {
    const pending = Array.from({ length: 8 }, (_, i) => fakeBuild(i));
    const claimSizes: number[] = [];
    let claimed = 0;
    let started = 0;
    const startedWhenClaimed: number[] = [];
    const controller = new AbortController();
    await runClaimLoop(
      {
        claim: async (n) => {
          claimSizes.push(n);
          startedWhenClaimed.push(claimed - started);
          const taken = pending.splice(0, n);
          claimed += taken.length;
          return taken;
        },
        wait: async () => {
          if (pending.length === 0) controller.abort();
        },
        complete: async () => undefined,
        fail: async () => undefined,
        release: async () => undefined,
      },
      async () => {
        started++;
        // Far longer than a claim (which answers at once here): even a claim slowed 100-fold by a
        // loaded machine leaves floor(2 x claim / 300 ms) at 0.
        await new Promise((r) => setTimeout(r, 300));
        return null;
      },
      { concurrency: 2, prefetch: "auto", signal: controller.signal },
    );
    expect(started).toBe(8);
    expect(Math.max(...claimSizes)).toBeLessThanOrEqual(2);
    // Every build claimed before a claim had started: none waited in the loop.
    expect(startedWhenClaimed.every((n) => n === 0)).toBe(true);
  });

  it("refuses a prefetch that is not a whole number, or without a way to release builds", async () => {
    const deps = {
      claim: async () => [],
      wait: async () => undefined,
      complete: async () => undefined,
      fail: async () => undefined,
    };
    const signal = AbortSignal.abort();
    await expect(
      runClaimLoop(deps, async () => null, { concurrency: 1, prefetch: 1.5, signal }),
    ).rejects.toThrow(/prefetch: must be an integer >= 0 or "auto"/);
    await expect(
      runClaimLoop(deps, async () => null, { concurrency: 1, prefetch: 2, signal }),
    ).rejects.toThrow(/prefetch: needs deps.release/);
    await expect(
      runClaimLoop(deps, async () => null, { concurrency: 1, prefetch: "auto", signal }),
    ).rejects.toThrow(/prefetch: needs deps.release/);
  });
});
