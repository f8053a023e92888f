import { describe, expect, it } from "vitest";
import { WedgeWatch } from "../../src/worker/wedge.js";

describe("WedgeWatch", () => {
  it("finds a build whose timeout the blocked loop missed by more than the grace", () => {
    const watch = new WedgeWatch(1000, 100);
    watch.alive(100);
    watch.deadline("a", 500);
    expect(watch.wedged(1400)).toBeUndefined(); // within the grace
    expect(watch.wedged(1600)).toEqual({ id: "a", blockedMs: 1500, pastTimeoutMs: 1100 });
  });

  it("is no wedge when the loop ran after the deadline (the timeout fired), or the build ended", () => {
    const watch = new WedgeWatch(1000, 100);
    watch.deadline("a", 500);
    watch.alive(600);
    expect(watch.wedged(5000)).toBeUndefined();
    watch.deadline("b", 700);
    watch.deadline("b", undefined);
    expect(watch.wedged(5000)).toBeUndefined();
  });

  it("keeps the latest sign of life when messages arrive out of order", () => {
    const watch = new WedgeWatch(1000, 100);
    watch.deadline("a", 500);
    watch.alive(600);
    watch.alive(400);
    expect(watch.wedged(5000)).toBeUndefined();
  });

  it("waits at least three of the loop's intervals: a live loop's next word may not be due yet", () => {
    const watch = new WedgeWatch(0, 2000);
    watch.alive(0);
    watch.deadline("a", 100);
    expect(watch.wedged(1999)).toBeUndefined(); // the loop's next word is due at 2000
    expect(watch.wedged(6099)).toBeUndefined();
    expect(watch.wedged(6100)?.id).toBe("a");
  });

  it("gives the loop a whole grace after the watcher itself stood still (a frozen process resumed)", () => {
    const watch = new WedgeWatch(1000, 100);
    watch.alive(0);
    watch.deadline("a", 500);
    expect(watch.wedged(250)).toBeUndefined();
    // SIGSTOP from 250 to 60,000: both threads stood still; on resume the watcher looks first.
    expect(watch.wedged(60_000)).toBeUndefined();
    // It goes on looking every 100 ms; the loop stays silent: wedged once a grace has passed.
    for (let now = 60_100; now < 61_000; now += 100) expect(watch.wedged(now), String(now)).toBeUndefined();
    expect(watch.wedged(61_000)).toMatchObject({ id: "a", pastTimeoutMs: 60_500 });
  });

  it("counts a loop that never said it runs as blocked since the start", () => {
    const watch = new WedgeWatch(200, 50);
    watch.deadline("a", 100);
    expect(watch.wedged(350)?.id).toBe("a");
  });
});
