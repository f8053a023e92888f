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
});
