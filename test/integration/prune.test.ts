/**
 * Retention: `queue.prune` and `oculus prune` delete finished builds that finished before the cutoff,
 * with their events, and workers unheard of since; queued and running builds stay however old; a dry
 * run deletes nothing; bad input changes nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Build, BuildNotFoundError, type BuildQueue, ValidationError } from "../../src/index.js";
import { backends } from "../helpers/backends.js";
import { oculus } from "../helpers/oculus-cli.js";
import { TEST_DATABASE_URL } from "../helpers/postgres.js";

const DAY_MS = 86_400_000;

describe.each(backends())("prune on $name", (backend) => {
  let queue: BuildQueue;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ queue, cleanup } = await backend.open(`prune_${backend.name}`));
  });
  afterAll(async () => {
    await cleanup();
    await backend.teardown();
  });

  /** Moves a build's finish (or a running build's start) back by `days`. */
  async function age(build: Build, days: number): Promise<void> {
    await queue.store.db.query(
      `UPDATE builds SET finished_at = finished_at - make_interval(days => $2),
                         created_at = created_at - make_interval(days => $2)
       WHERE id = $1`,
      [build.id, days],
    );
  }

  async function eventCount(id: string): Promise<number> {
    const res = await queue.store.db.query<{ n: number }>(
      "SELECT count(*)::integer AS n FROM build_events WHERE build_id = $1",
      [id],
    );
    return Number(res.rows[0]?.n);
  }

  /** Claims this build (and completes any other in the way). */
  async function claimThis(id: string) {
    for (;;) {
      const [claimed] = await queue.claim("w-prune", 1);
      if (!claimed) throw new Error("nothing to claim");
      if (claimed.id === id) return claimed;
      await queue.complete(claimed.id, claimed.lease, null);
    }
  }

  it("deletes old finished builds with their events; keeps queued, running and recent ones", async () => {
    const old = await queue.submitMany([
      { strategyId: "old-completed", idempotencyKey: `k-${backend.name}-1` },
      { strategyId: "old-failed", maxRetries: 0 },
      { strategyId: "old-stopped" },
      { strategyId: "old-running" },
      { strategyId: "recent-completed" },
    ]);
    const [completed, failed, stopped, running, recent] = old.map((r) => r.build) as Build[];
    if (!completed || !failed || !stopped || !running || !recent) throw new Error("submit");
    const c = await claimThis(completed.id);
    await queue.complete(c.id, c.lease, { ok: true });
    const f = await claimThis(failed.id);
    await queue.fail(f.id, f.lease, "broken");
    await queue.stop(stopped.id, { actor: "test", reason: "not needed" });
    const r = await claimThis(running.id);
    const rc = await claimThis(recent.id);
    await queue.complete(rc.id, rc.lease, null);
    const { build: queued } = await queue.submit({ strategyId: "old-queued" });
    for (const b of [completed, failed, stopped, queued, running]) await age(b, 10);
    expect(await eventCount(completed.id)).toBeGreaterThanOrEqual(3);

    const dry = await queue.prune({ olderThanMs: 5 * DAY_MS, dryRun: true });
    expect(dry).toMatchObject({ dryRun: true, builds: 3 });
    expect(dry.events).toBeGreaterThanOrEqual(8);
    expect((await queue.get(completed.id)).status).toBe("completed");

    const report = await queue.prune({ olderThanMs: 5 * DAY_MS, batchSize: 1 });
    expect(report).toMatchObject({ dryRun: false, builds: 3, events: dry.events });
    for (const gone of [completed, failed, stopped]) {
      await expect(queue.get(gone.id)).rejects.toBeInstanceOf(BuildNotFoundError);
      expect(await eventCount(gone.id)).toBe(0);
    }
    expect((await queue.get(queued.id)).status).toBe("queued");
    expect((await queue.get(running.id)).status).toBe("running");
    expect((await queue.get(recent.id)).status).toBe("completed");
    expect(await eventCount(running.id)).toBeGreaterThan(0);

    // The freed idempotency key makes a new build; the queued old build is still claimable.
    const again = await queue.submit({ strategyId: "old-completed", idempotencyKey: `k-${backend.name}-1` });
    expect(again.created).toBe(true);
    expect(again.build.id).not.toBe(completed.id);
    await queue.complete(r.id, r.lease, null);
    expect((await queue.prune({ olderThanMs: 5 * DAY_MS })).builds).toBe(0);
  });

  it("forgets workers stopped or unheard of before the cutoff, unless they run something", async () => {
    const db = queue.store.db;
    const insert = `INSERT INTO workers (id, hostname, pid, capacity, version, last_heartbeat_at, stopped_at)
                    VALUES ($1, 'host', 1, 1, 'test', now() - make_interval(days => $2), $3::timestamptz)`;
    await db.query(insert, ["gone-stopped", 10, new Date(Date.now() - 10 * DAY_MS).toISOString()]);
    await db.query(insert, ["gone-vanished", 10, null]);
    await db.query(insert, ["fresh", 0, null]);
    await db.query(insert, ["old-but-busy", 10, null]);
    const { build } = await queue.submit({ strategyId: "busy" });
    const claimed = await claimThis(build.id);
    await db.query("UPDATE builds SET worker_id = 'old-but-busy' WHERE id = $1", [claimed.id]);

    expect((await queue.prune({ olderThanMs: 5 * DAY_MS, dryRun: true })).workers).toBe(2);
    expect((await queue.prune({ olderThanMs: 5 * DAY_MS })).workers).toBe(2);
    const left = await db.query<{ id: string }>("SELECT id FROM workers ORDER BY id");
    expect(left.rows.map((w) => w.id)).toEqual(expect.arrayContaining(["fresh", "old-but-busy"]));
    expect(left.rows.map((w) => w.id)).not.toContain("gone-stopped");
    expect(left.rows.map((w) => w.id)).not.toContain("gone-vanished");
  });

  it("refuses bad options, naming them, and deletes nothing", async () => {
    const before = await queue.prune({ olderThanMs: 0, dryRun: true });
    await expect(queue.prune({ olderThanMs: -1 })).rejects.toThrow(ValidationError);
    await expect(queue.prune({ olderThanMs: Number.NaN })).rejects.toThrow(/olderThanMs/);
    await expect(queue.prune({ olderThanMs: 1000, batchSize: 0 })).rejects.toThrow(/batchSize/);
    expect(await queue.prune({ olderThanMs: 0, dryRun: true })).toMatchObject({
      builds: before.builds,
      events: before.events,
    });
  });
});

describe("oculus prune", () => {
  it("counts on --dry-run, deletes otherwise, and refuses a missing or bad --older-than-days", async () => {
    const schema = `t_prune_cli_${process.pid}`;
    const env = { DATABASE_URL: TEST_DATABASE_URL, OCULUS_SCHEMA: schema };
    const { BuildQueue } = await import("../../src/index.js");
    const queue = await BuildQueue.open({ databaseUrl: TEST_DATABASE_URL, schema });
    try {
      const { build } = await queue.submit({ strategyId: "cli-prune" });
      await queue.stop(build.id, { actor: "test" });
      await queue.store.db.query("UPDATE builds SET finished_at = now() - interval '3 days' WHERE id = $1", [
        build.id,
      ]);

      const dry = await oculus(["prune", "--older-than-days", "2", "--dry-run", "--json"], env);
      expect(dry.code).toBe(0);
      expect(JSON.parse(dry.stdout)).toMatchObject({ dryRun: true, builds: 1 });
      expect((await queue.get(build.id)).status).toBe("stopped");

      const kept = await oculus(["prune", "--older-than-days", "4"], env);
      expect(kept.stdout).toMatch(/deleted 0 finished build/);

      const done = await oculus(["prune", "--older-than-days", "2.5"], env);
      expect(done.code).toBe(0);
      expect(done.stdout).toMatch(/deleted 1 finished build\(s\) older than 2\.5 day/);
      await expect(queue.get(build.id)).rejects.toBeInstanceOf(BuildNotFoundError);

      const missing = await oculus(["prune"], env);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toMatch(/--older-than-days/);
      const bad = await oculus(["prune", "--older-than-days", "0"], env);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/--older-than-days: must be a number of days greater than 0, got "0"/);
    } finally {
      await queue.store.db.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await queue.close();
    }
  });
});
