import { describe, expect, it } from "vitest";
import { silentLogger } from "../../src/core/logger.js";
import { WakeSignal } from "../../src/queue/wake.js";

const within = <T>(p: Promise<T>, ms: number) =>
  Promise.race([p.then(() => "woken"), new Promise((r) => setTimeout(() => r("timed out"), ms))]);

describe("wake signal", () => {
  it("wakes every waiter", async () => {
    const wake = new WakeSignal(silentLogger());
    const a = wake.wait(60_000);
    const b = wake.wait(60_000);
    wake.wakeAll();
    expect(await within(Promise.all([a, b]), 10_000)).toBe("woken");
  });

  it("keeps a wake-up that came while nobody waited, for the next wait only", async () => {
    const wake = new WakeSignal(silentLogger());
    wake.wakeAll(); // e.g. a submit between a claimer's empty claim and its wait
    expect(await within(wake.wait(60_000), 10_000)).toBe("woken");
    expect(await within(wake.wait(200), 10_000)).toBe("woken"); // by its own timeout
  });

  it("returns when the signal aborts", async () => {
    const wake = new WakeSignal(silentLogger());
    const controller = new AbortController();
    const waiting = wake.wait(60_000, controller.signal);
    controller.abort();
    expect(await within(waiting, 10_000)).toBe("woken");
  });
});
