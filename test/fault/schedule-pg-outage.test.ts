/**
 * The scheduler through a PostgreSQL outage (issue 14): a private cluster stopped (immediate) for a
 * few seconds while an every-second schedule ticks, then started again. The scheduler logs its failed
 * passes and goes on by itself; afterwards every tick has exactly one build, and the ticks that came
 * due during the outage follow the missed-ticks policy (one build for the most recent, the older ones
 * counted).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Build, BuildQueue } from "../../src/index.js";
import { captureLogs } from "../helpers/api.js";
import { PgCluster } from "../helpers/pg-cluster.js";
import { eventually } from "../helpers/queue.js";

interface TickInfo {
  tick: string;
  missed: number;
}

const tickOf = (b: Build) => b.params.schedule as TickInfo;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("the scheduler through a PostgreSQL outage", () => {
  let cluster: PgCluster;
  let queue: BuildQueue;
  const { lines, logger } = captureLogs();

  beforeAll(async () => {
    cluster = await PgCluster.start();
    queue = await BuildQueue.open({
      databaseUrl: cluster.url(),
      schema: "sched_outage",
      logger,
      pgConnectTimeoutMs: 1000,
    });
  });
  afterAll(async () => {
    await queue?.close().catch(() => undefined);
    cluster?.destroy();
  });

  const builds = async () =>
    (await queue.list({ strategyId: "outage-s", limit: 1000 })).builds.sort(
      (a, b) => Date.parse(tickOf(a).tick) - Date.parse(tickOf(b).tick),
    );

  it("goes on by itself after PostgreSQL returns; one build per tick, the outage's ticks counted as missed", async () => {
    queue.startScheduler();
    await queue.schedules.add({ name: "outage", cron: "* * * * * *", strategyId: "outage-s" });
    await eventually(async () => (await builds()).length >= 3, 30_000);

    cluster.stop("immediate");
    await sleep(4000);
    cluster.startAgain();
    const back = Date.now();
    await eventually(
      async () => (await builds()).filter((b) => b.createdAt.getTime() > back).length >= 3,
      60_000,
    );
    await queue.schedules.pause("outage");

    const all = await builds();
    expect(new Set(all.map((b) => b.idempotencyKey)).size).toBe(all.length);
    for (let i = 1; i < all.length; i++) {
      const gap =
        (Date.parse(tickOf(all[i] as Build).tick) - Date.parse(tickOf(all[i - 1] as Build).tick)) / 1000;
      expect(gap).toBe(1 + tickOf(all[i] as Build).missed);
    }
    // PostgreSQL was away at least 4 s: the first tick after it counts the ones that came due meanwhile.
    expect(Math.max(...all.map((b) => tickOf(b).missed))).toBeGreaterThanOrEqual(2);
    expect(lines.some((l) => l.includes("scheduler pass failed"))).toBe(true);
    expect(lines.some((l) => l.includes("skipped older missed ones"))).toBe(true);
  }, 180_000);
});
