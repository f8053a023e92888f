/**
 * The dashboard's minute counts (src/http/stats-history.ts) from events as the stream delivers them:
 * counts land in the minute of the event's time, failures with retries left are not failures,
 * dispatch latency runs from submit, requeue or the end of a backoff to the claim, and minutes older
 * than the hour are dropped.
 */
import { describe, expect, it } from "vitest";
import type { BuildEvent, StreamEventType } from "../../src/core/events.js";
import { silentLogger } from "../../src/core/logger.js";
import { StatsHistory } from "../../src/http/stats-history.js";
import type { BuildQueue } from "../../src/index.js";

const T0 = Date.parse("2026-12-03T10:00:00.000Z");
let nextId = 1;

function event(
  buildId: string,
  type: StreamEventType,
  atMs: number,
  data: Record<string, unknown> | null = null,
): BuildEvent {
  return {
    kind: "event",
    id: String(nextId++),
    buildId,
    type,
    event: type,
    status: null,
    fromStatus: null,
    actor: "test",
    at: new Date(atMs).toISOString(),
    data,
  };
}

function history(nowMs: number) {
  let now = nowMs;
  // record() and history() use neither the queue nor the logger's output.
  const stats = new StatsHistory({} as BuildQueue, silentLogger(), 5000, () => now);
  return { stats, setNow: (ms: number) => (now = ms) };
}

describe("stats history", () => {
  it("counts submits, completions and final failures per minute of the event's time", () => {
    const { stats } = history(T0 + 5 * 60_000);
    stats.record(event("a", "queued", T0 + 1000));
    stats.record(event("b", "queued", T0 + 61_000));
    stats.record(event("a", "running", T0 + 3000));
    stats.record(event("a", "completed", T0 + 62_000));
    stats.record(event("b", "running", T0 + 61_500));
    stats.record(event("b", "requeued", T0 + 62_000, { runAt: new Date(T0 + 64_000).toISOString() }));
    stats.record(event("b", "running", T0 + 65_000));
    stats.record(event("b", "failed", T0 + 66_000));
    const minutes = stats.history(60);
    expect(minutes).toHaveLength(60);
    const at = (ms: number) => minutes.find((m) => m.at === new Date(ms).toISOString());
    expect(at(T0)).toMatchObject({
      submitted: 1,
      completed: 0,
      failed: 0,
      dispatches: 1,
      dispatchLatencyMsAvg: 2000,
    });
    // b: claimed 500 ms after submit, then 1000 ms after its backoff ended (not after its requeue).
    expect(at(T0 + 60_000)).toMatchObject({
      submitted: 1,
      completed: 1,
      failed: 1,
      dispatches: 2,
      dispatchLatencyMsAvg: 750,
      dispatchLatencyMsMax: 1000,
    });
    expect(at(T0 + 120_000)).toMatchObject({ submitted: 0, queueDepth: null, dispatchLatencyMsAvg: null });
  });

  it("a claim of a build it never saw become claimable has no latency; a stopped build is forgotten", () => {
    const { stats } = history(T0 + 60_000);
    stats.record(event("x", "running", T0 + 1000));
    stats.record(event("y", "queued", T0 + 1000));
    stats.record(event("y", "stopped", T0 + 2000));
    stats.record(event("y", "running", T0 + 3000));
    const sum = stats.history(2).reduce((n, m) => n + m.dispatches, 0);
    expect(sum).toBe(0);
  });

  it("drops what is older than the hour", () => {
    const { stats, setNow } = history(T0);
    stats.record(event("a", "queued", T0));
    expect(stats.history(1)[0]?.submitted).toBe(1);
    setNow(T0 + 60 * 60_000);
    expect(stats.history(60).reduce((n, m) => n + m.submitted, 0)).toBe(0);
    stats.record(event("b", "queued", T0 - 1));
    expect(stats.history(60).reduce((n, m) => n + m.submitted, 0)).toBe(0);
  });
});
