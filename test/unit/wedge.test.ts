import { describe, expect, it } from "vitest";
import { WedgeWatch } from "../../src/worker/wedge.js";

describe("WedgeWatch", () => {
  it("finds a build whose timeout the blocked loop missed by more than the grace", () => {
    const watch = new WedgeWatch(1000);
    watch.alive(100);
    watch.deadline("a", 500);
    expect(watch.wedged(1400)).toBeUndefined(); // within the grace
    expect(watch.wedged(1600)).toEqual({ id: "a", blockedMs: 1500, pastTimeoutMs: 1100 });
  });

  it("is no wedge when the loop ran after the deadline (the timeout fired), or the build ended", () => {
    const watch = new WedgeWatch(1000);
    watch.deadline("a", 500);
    watch.alive(600);
    expect(watch.wedged(5000)).toBeUndefined();
    watch.deadline("b", 700);
    watch.deadline("b", undefined);
    expect(watch.wedged(5000)).toBeUndefined();
  });

  it("keeps the latest sign of life when messages arrive out of order", () => {
    const watch = new WedgeWatch(1000);
    watch.deadline("a", 500);
    watch.alive(600);
    watch.alive(400);
    expect(watch.wedged(5000)).toBeUndefined();
  });

  it("counts a loop that never said it runs as blocked since the start", () => {
    const watch = new WedgeWatch(200);
    watch.deadline("a", 100);
    expect(watch.wedged(350)?.id).toBe("a");
  });
});
