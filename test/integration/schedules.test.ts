/**
 * Recurring schedules (issue 14) through the library: several schedulers on one schema submit exactly
 * one build per tick (Redis fast path and PostgreSQL only); missed ticks after downtime follow the
 * documented policy (one build for the most recent, the older ones counted); pause, resume, update
 * and remove; bad input names the field and writes nothing; the tick key guards a re-added schedule;
 * a PostgreSQL connection terminated in the middle of a tick neither stops the scheduler nor submits
 * a tick twice. The basic behaviour runs on every backend (Redis, PostgreSQL, PGlite).
 */
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { type Build, type BuildQueue, ValidationError } from "../../src/index.js";
import { captureLogs } from "../helpers/api.js";
import { backends } from "../helpers/backends.js";
import { sql } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

interface TickInfo {
  name: string;
  tick: string;
  missed: number;
}

const tickOf = (b: Build) => b.params.schedule as TickInfo;

async function buildsOf(queue: BuildQueue, strategyId: string): Promise<Build[]> {
  const { builds } = await queue.list({ strategyId, limit: 1000 });
  return builds.sort((a, b) => Date.parse(tickOf(a).tick) - Date.parse(tickOf(b).tick));
}

/**
 * Exactly one build per tick, and no tick lost without being counted: each build carries its tick
 * in its key; between two consecutive builds of an every-second schedule, every skipped second is
 * counted in the later build's `missed`.
 */
function expectOneBuildPerTick(builds: Build[], name: string): void {
  const keys = builds.map((b) => b.idempotencyKey);
  expect(new Set(keys).size).toBe(builds.length);
  for (const b of builds) {
    const info = tickOf(b);
    expect(info.name).toBe(name);
    expect(b.idempotencyKey).toBe(`schedule:${name}:${info.tick}`);
    expect(new Date(info.tick).getUTCMilliseconds()).toBe(0);
  }
  for (let i = 1; i < builds.length; i++) {
    const gapSeconds =
      (Date.parse(tickOf(builds[i] as Build).tick) - Date.parse(tickOf(builds[i - 1] as Build).tick)) / 1000;
    expect(gapSeconds).toBe(1 + tickOf(builds[i] as Build).missed);
  }
}

function validationOf(promise: Promise<unknown>): Promise<ValidationError> {
  return promise.then(
    () => {
      throw new Error("accepted");
    },
    (err: unknown) => {
      if (err instanceof ValidationError) return err;
      throw err;
    },
  );
}

describe.each(backends())("schedules on $name", (backend) => {
  let queue: BuildQueue;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ queue, cleanup } = await backend.open(`sched_${backend.name}`));
  });
  afterAll(async () => {
    await cleanup?.();
    await backend.teardown();
  });

  it("adds a schedule with UTC as its explicit zone and its first tick ahead", async () => {
    const s = await queue.schedules.add({ name: "hourly", cron: "0 * * * *", strategyId: "hourly-s" });
    expect(s).toMatchObject({
      name: "hourly",
      timezone: "UTC",
      paused: false,
      lastTickAt: null,
      maxRetries: 3,
    });
    expect(s.nextTickAt?.getUTCMinutes()).toBe(0);
    expect(s.nextTickAt?.getTime()).toBeGreaterThan(Date.now() - 5000);
    expect(s.nextTickAt?.getTime()).toBeLessThanOrEqual(Date.now() + 3_600_000 + 5000);
    expect((await queue.schedules.list()).map((x) => x.name)).toContain("hourly");
    expect((await queue.schedules.get("hourly")).cron).toBe("0 * * * *");
    await expect(
      queue.schedules.add({ name: "hourly", cron: "0 * * * *", strategyId: "x" }),
    ).rejects.toMatchObject({ code: "already_exists", httpStatus: 409 });
  });

  it("refuses bad input naming the field, and writes nothing", async () => {
    const before = await queue.schedules.list();
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ name: "b1", cron: "61 * * * *", strategyId: "s" }, "cron", /is not a valid cron expression/],
      [{ name: "b2", cron: "* * * * *", timezone: "Nowhere/Land", strategyId: "s" }, "timezone", /IANA/],
      [{ name: "bad name!", cron: "* * * * *", strategyId: "s" }, "name", /letters, digits/],
      [{ name: "b3", cron: "* * * * *" }, "strategyId", /required/],
      [
        { name: "b4", cron: "* * * * *", strategyId: "s", params: { schedule: {} } },
        "params.schedule",
        /reserved/,
      ],
    ];
    for (const [input, field, reason] of cases) {
      const err = await validationOf(queue.schedules.add(input as never));
      expect(err.field).toBe(field);
      expect(err.message).toMatch(reason);
    }
    expect(
      (await validationOf(queue.schedules.update("hourly", { cron: "* *", strategyId: "s" }))).field,
    ).toBe("cron");
    expect((await validationOf(queue.schedules.get("no/such"))).field).toBe("name");
    expect(await queue.schedules.list()).toEqual(before);
  });

  it("submits one build for the most recent missed tick and counts the older ones", async () => {
    await queue.schedules.add({
      name: "missed",
      cron: "* * * * *",
      strategyId: "missed-s",
      params: { a: 1 },
    });
    // As if no scheduler had run for ten minutes.
    const { rows } = await queue.store.db.query<{ next_tick_at: Date }>(
      "UPDATE schedules SET next_tick_at = date_trunc('minute', now()) - interval '10 minutes' WHERE name = 'missed' RETURNING next_tick_at",
    );
    const since = (rows[0] as { next_tick_at: Date }).next_tick_at;
    const ticks = await queue.schedules.runDue();
    const mine = ticks.filter((t) => t.schedule === "missed");
    expect(mine).toHaveLength(1);
    const [t] = mine;
    if (!t) throw new Error("no tick");
    expect(t.tick.getUTCSeconds()).toBe(0);
    expect(t.missed).toBe((t.tick.getTime() - since.getTime()) / 60_000);
    expect(t.missed).toBeGreaterThanOrEqual(10);
    expect(t.created).toBe(true);
    expect(t.build.params).toEqual({
      a: 1,
      schedule: { name: "missed", tick: t.tick.toISOString(), missed: t.missed },
    });
    expect(t.build.idempotencyKey).toBe(`schedule:missed:${t.tick.toISOString()}`);
    const after = await queue.schedules.get("missed");
    expect(after).toMatchObject({ lastBuildId: t.build.id, lastMissed: t.missed });
    expect(after.lastTickAt?.getTime()).toBe(t.tick.getTime());
    expect(after.nextTickAt?.getTime()).toBe(t.tick.getTime() + 60_000);
    // Nothing more is due: the older ticks are not submitted later.
    expect((await queue.schedules.runDue()).filter((x) => x.schedule === "missed")).toEqual([]);
    expect((await queue.list({ strategyId: "missed-s" })).builds).toHaveLength(1);

    // Removed and added again under the same name, the same tick is not submitted twice (its key).
    await queue.schedules.remove("missed");
    await queue.schedules.add({ name: "missed", cron: "* * * * *", strategyId: "missed-s" });
    await queue.store.db.query("UPDATE schedules SET next_tick_at = $1 WHERE name = 'missed'", [t.tick]);
    const [again] = (await queue.schedules.runDue()).filter((x) => x.schedule === "missed");
    if (again?.tick.getTime() === t.tick.getTime()) {
      expect(again).toMatchObject({ created: false });
      expect(again.build.id).toBe(t.build.id);
    }
    // (A minute boundary in between makes it a later tick: then it is a new build, once.)
    const keys = (await queue.list({ strategyId: "missed-s" })).builds.map((b) => b.idempotencyKey);
    expect(new Set(keys).size).toBe(keys.length);
    await queue.schedules.remove("missed");
  });

  it("pauses (no builds, no tick), resumes from the next tick, updates and removes", async () => {
    const created = await queue.schedules.add({
      name: "every-second",
      cron: "* * * * * *",
      strategyId: "pause-s",
      paused: true,
    });
    expect(created).toMatchObject({ paused: true, nextTickAt: null });
    const noneWhilePaused = await queue.schedules.runDue();
    expect(noneWhilePaused.filter((t) => t.schedule === "every-second")).toEqual([]);

    const resumed = await queue.schedules.resume("every-second");
    expect(resumed.paused).toBe(false);
    expect(resumed.nextTickAt).not.toBeNull();
    const tick = await eventually(async () => {
      const ticks = await queue.schedules.runDue();
      return ticks.find((t) => t.schedule === "every-second");
    });
    expect(tick.missed).toBe(0);
    expect(tick.build.priority).toBe(0);

    const paused = await queue.schedules.pause("every-second");
    expect(paused).toMatchObject({ paused: true, nextTickAt: null });
    const count = (await queue.list({ strategyId: "pause-s" })).builds.length;
    await new Promise((r) => setTimeout(r, 1200));
    await queue.schedules.runDue();
    expect((await queue.list({ strategyId: "pause-s" })).builds.length).toBe(count);

    const updated = await queue.schedules.update("every-second", {
      cron: "0 0 1 1 *",
      timezone: "Europe/Berlin",
      strategyId: "pause-s2",
      priority: 7,
      requires: { gpu: "true" },
      timeoutSeconds: 60,
    });
    // An update that does not say `paused` keeps it paused.
    expect(updated).toMatchObject({
      paused: true,
      nextTickAt: null,
      timezone: "Europe/Berlin",
      priority: 7,
      requires: { gpu: "true" },
    });
    expect(updated.lastBuildId).toBe(tick.build.id); // the history stays
    const running = await queue.schedules.update("every-second", {
      cron: "0 0 1 1 *",
      timezone: "Europe/Berlin",
      strategyId: "pause-s2",
      paused: false,
    });
    expect(running.paused).toBe(false);
    // New Year in Berlin is 23:00 UTC on 31 December.
    expect(running.nextTickAt?.toISOString()).toMatch(/-12-31T23:00:00.000Z$/);

    const removed = await queue.schedules.remove("every-second");
    expect(removed.name).toBe("every-second");
    await expect(queue.schedules.get("every-second")).rejects.toMatchObject({
      code: "not_found",
      httpStatus: 404,
    });
    await expect(queue.schedules.remove("every-second")).rejects.toMatchObject({ httpStatus: 404 });
    await expect(queue.schedules.pause("every-second")).rejects.toMatchObject({ httpStatus: 404 });
    await expect(queue.schedules.resume("every-second")).rejects.toMatchObject({ httpStatus: 404 });
    await expect(
      queue.schedules.update("every-second", { cron: "* * * * *", strategyId: "x" }),
    ).rejects.toMatchObject({ httpStatus: 404 });
    // Its builds stay.
    expect((await queue.get(tick.build.id)).id).toBe(tick.build.id);
  });

  it("a schedule with a concurrency key: a tick's build waits while the previous one runs", async () => {
    const key = `sched-key-${backend.name}`;
    // A queue of its own: builds that earlier tests left queued would be claimed here.
    const own = await backend.open(`sched_key_${backend.name}`);
    onTestFinished(() => own.cleanup());
    const queue = own.queue;
    const added = await queue.schedules.add({
      name: "keyed",
      cron: "* * * * * *",
      strategyId: "keyed-s",
      concurrencyKey: key,
    });
    expect(added.concurrencyKey).toBe(key);
    const nextBuild = async (seen: Set<string>) =>
      eventually(async () => {
        const ticks = (await queue.schedules.runDue()).filter((t) => t.schedule === "keyed" && t.created);
        return ticks.find((t) => !seen.has(t.build.id))?.build;
      }, 10_000);
    const seen = new Set<string>();
    // The first tick's build takes the key's only slot, and runs.
    const first = await nextBuild(seen);
    seen.add(first.id);
    expect(first).toMatchObject({ concurrencyKey: key, held: false });
    const [running] = await eventually(async () => {
      const got = await queue.claim("keyed-worker", 10);
      return got.length > 0 ? got : undefined;
    });
    expect(running?.id).toBe(first.id);
    // A later tick's build is held while the first runs: nothing to claim.
    const second = await nextBuild(seen);
    expect(second).toMatchObject({ concurrencyKey: key, held: true });
    expect(await queue.waitingOn(second)).toEqual({ concurrencyKey: key, running: 1, limit: 1 });
    await queue.schedules.pause("keyed");
    expect(await queue.claim("keyed-worker", 10)).toEqual([]);
    // The first ends: the next tick's build is admitted and claimable.
    await queue.complete(first.id, running?.lease ?? 0);
    const [next] = await eventually(async () => {
      const got = await queue.claim("keyed-worker", 10);
      return got.length > 0 ? got : undefined;
    });
    expect(next?.id).toBe(second.id);
    await queue.complete(second.id, next?.lease ?? 0);
    // Bad keys are refused naming the field.
    const err = await validationOf(
      queue.schedules.add({ name: "bad-key", cron: "* * * * *", strategyId: "x", concurrencyKey: "" }),
    );
    expect(err.field).toBe("concurrencyKey");
    await queue.schedules.remove("keyed");
  });

  it("runs the loop with startScheduler: builds arrive tick by tick and are claimable", async () => {
    queue.startScheduler();
    await queue.schedules.add({ name: "loop", cron: "* * * * * *", strategyId: "loop-s", priority: 3 });
    const builds = await eventually(async () => {
      const got = await buildsOf(queue, "loop-s");
      return got.length >= 3 ? got : undefined;
    }, 30_000);
    await queue.schedules.pause("loop");
    expectOneBuildPerTick(await buildsOf(queue, "loop-s"), "loop");
    const claimed = await eventually(async () => {
      const got = await queue.claim("sched-worker", 100);
      return got.length > 0 ? got : undefined;
    });
    expect(claimed.map((b) => b.strategyId)).toContain("loop-s");
    expect(builds[0]?.priority).toBe(3);
  });
});

const MODES = [
  { name: "redis", redis: true },
  { name: "postgres", redis: false },
] as const;

describe.each(MODES)("several schedulers on one schema ($name)", (mode) => {
  let redis: RedisServer | undefined;
  const queues: BuildQueue[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  let schema: string;

  beforeAll(async () => {
    if (mode.redis) redis = await RedisServer.start({ appendonly: false });
    const redisUrl = redis?.url;
    const first = await openTestQueue(`sched_race_${mode.name}`, { redisUrl });
    schema = first.schema;
    queues.push(first.queue);
    cleanups.push(first.cleanup);
    for (let i = 0; i < 2; i++) {
      const other = await openTestQueue(`sched_race_${mode.name}`, {
        redisUrl,
        schema,
        prefix: first.prefix,
      });
      queues.push(other.queue);
      cleanups.unshift(other.cleanup);
    }
  });
  afterAll(async () => {
    for (const c of cleanups) await c();
    await redis?.destroy();
  });

  it("three schedulers submit exactly one build per tick", async () => {
    const [a, b, c] = queues as [BuildQueue, BuildQueue, BuildQueue];
    for (const q of queues) q.startScheduler();
    await a.schedules.add({ name: "race", cron: "* * * * * *", strategyId: "race-s" });
    await eventually(async () => (await buildsOf(b, "race-s")).length >= 8, 60_000);
    // Paused through another process: every scheduler stops within a pass.
    await c.schedules.pause("race");
    const builds = await buildsOf(a, "race-s");
    expectOneBuildPerTick(builds, "race");
    // The record agrees: one row per key, all from the schedule.
    const rows = await sql<{ n: number; keys: number }>(
      schema,
      "SELECT count(*)::int AS n, count(DISTINCT idempotency_key)::int AS keys FROM builds WHERE strategy_id = 'race-s'",
    );
    expect(rows[0]?.n).toBe(rows[0]?.keys);
    expect(rows[0]?.n).toBe(builds.length);
    const events = await sql<{ actor: string }>(
      schema,
      "SELECT DISTINCT actor FROM build_events e JOIN builds b ON b.id = e.build_id WHERE b.strategy_id = 'race-s' AND e.type = 'submitted'",
    );
    expect(events).toEqual([{ actor: "schedule:race" }]);
    // Every build is dispatchable (indexed in Redis in that mode).
    const claimed: string[] = [];
    await eventually(async () => {
      claimed.push(...(await a.claim("race-worker", 100)).map((x) => x.id));
      return claimed.length >= builds.length;
    });
    expect(new Set(claimed)).toEqual(new Set(builds.map((x) => x.id)));
  });

  it("a connection terminated in the middle of a tick: the scheduler goes on, no tick twice", async () => {
    const { lines, logger } = captureLogs();
    const victim = await openTestQueue(`sched_fault_${mode.name}`, { redisUrl: redis?.url, logger });
    try {
      const vschema = victim.schema;
      // Each scheduled insert takes 400 ms and marks its session, so the test finds it mid-tick.
      await sql(
        vschema,
        `CREATE FUNCTION slow_scheduled() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           PERFORM set_config('application_name', 'victim_${vschema}', true);
           PERFORM pg_sleep(0.4);
           RETURN NEW;
         END $$`,
      );
      await sql(
        vschema,
        "CREATE TRIGGER slow_scheduled BEFORE INSERT ON builds FOR EACH ROW WHEN (NEW.idempotency_key LIKE 'schedule:%') EXECUTE FUNCTION slow_scheduled()",
      );
      victim.queue.startScheduler();
      await victim.queue.schedules.add({ name: "fault", cron: "* * * * * *", strategyId: "fault-s" });
      for (let kill = 0; kill < 2; kill++) {
        // Found and terminated in one statement, so the session is mid-tick when it is killed (see
        // schedule-cli.test.ts).
        await eventually(async () => {
          const killed = await sql<{ pid: number }>(
            vschema,
            "WITH victim AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE application_name = $1) SELECT pid FROM victim WHERE pg_terminate_backend(pid)",
            [`victim_${vschema}`],
          );
          return killed.length > 0;
        }, 30_000);
      }
      const killedAt = Date.now();
      // It goes on: more ticks after the kills.
      await eventually(async () => {
        const builds = await buildsOf(victim.queue, "fault-s");
        return builds.filter((b) => b.createdAt.getTime() > killedAt + 1000).length >= 2;
      }, 60_000);
      await victim.queue.schedules.pause("fault");
      expectOneBuildPerTick(await buildsOf(victim.queue, "fault-s"), "fault");
      expect(lines.some((l) => l.includes("scheduler pass failed"))).toBe(true);
    } finally {
      await victim.cleanup();
    }
  });
});
