/**
 * Schedules as operators run them (issue 14): the `oculus schedule` commands against real `oculus up`
 * processes (the built binary), and two `oculus up` processes sharing one schedule: both run the
 * scheduler, one is killed with SIGKILL, the other keeps ticking, and every tick has exactly one
 * build. With Redis and on PostgreSQL only.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type OculusProcess, oculus, spawnOculus } from "../helpers/oculus-cli.js";
import { fleetEnv } from "../helpers/oculus-fleet.js";
import { dropSchema, sql } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

interface TickRow {
  idempotency_key: string;
  params: { schedule: { name: string; tick: string; missed: number } };
  created_at: Date;
}

async function startUp(env: Record<string, string>): Promise<{ proc: OculusProcess; url: string }> {
  const proc = spawnOculus(["up", "--port", "0"], env);
  const url = await eventually(async () => {
    if (proc.child.exitCode !== null) throw new Error(`oculus up exited:\n${proc.output()}`);
    return /API listening on (http:\/\/\S+) /.exec(proc.output())?.[1];
  }, 60_000);
  return { proc, url };
}

describe.each([
  { name: "redis", redis: true },
  { name: "postgres", redis: false },
])("oculus schedule and two oculus up processes ($name)", (mode) => {
  let redis: RedisServer | undefined;
  let schema: string;
  let env: Record<string, string>;
  const procs: OculusProcess[] = [];
  let urlA: string;
  let urlB: string;
  let a: OculusProcess;

  beforeAll(async () => {
    if (mode.redis) redis = await RedisServer.start({ appendonly: false });
    const fleet = fleetEnv(`sched_cli_${mode.name}`, redis?.url ?? "");
    schema = fleet.schema;
    env = { ...fleet.env };
    if (!mode.redis) delete env.REDIS_URL;
    const first = await startUp(env);
    a = first.proc;
    urlA = first.url;
    procs.push(a);
    const second = await startUp(env);
    urlB = second.url;
    procs.push(second.proc);
  }, 120_000);
  afterAll(async () => {
    for (const p of procs) p.child.kill("SIGKILL");
    await Promise.all(procs.map((p) => p.exited));
    await dropSchema(schema);
    await redis?.destroy();
  });

  const cli = (url: string, ...args: string[]) => oculus(args, { OCULUS_URL: url });

  it("adds, lists (next tick in its zone and UTC), pauses, resumes and removes; bad input exits 2 naming the field", async () => {
    expect(a.output()).toContain("scheduler: on");
    const added = await cli(
      urlA,
      "schedule",
      "add",
      "nightly",
      "--cron",
      "0 2 * * *",
      "--strategy",
      "momentum",
      "--timezone",
      "Europe/Berlin",
      "--params",
      '{"lr": 0.1}',
      "--priority",
      "3",
      "--requires",
      "gpu=true",
    );
    expect(added.code, added.stderr).toBe(0);
    expect(added.stdout).toMatch(
      /schedule nightly added: "0 2 \* \* \*" in Europe\/Berlin, strategy momentum; next tick \d{4}-\d\d-\d\d 02:00:00 \S+ \(\d{4}-\d\d-\d\dT0[01]:00:00.000Z\)/,
    );

    const utc = await cli(
      urlB,
      ...["schedule", "add", "hourly", "--cron", "0 * * * *", "--strategy", "s"],
      ...["--concurrency-key", "hourly-runs"],
    );
    expect(utc.code, utc.stderr).toBe(0);
    expect(utc.stdout).toContain("in UTC (the default; --timezone to change)");

    const list = await cli(urlB, "schedule", "list");
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(
      /NAME\s+CRON\s+TIMEZONE\s+STRATEGY\s+STATE\s+NEXT TICK \(ZONE\)\s+NEXT TICK \(UTC\)/,
    );
    expect(list.stdout).toMatch(
      /nightly\s+0 2 \* \* \*\s+Europe\/Berlin\s+momentum\s+active\s+\S+ 02:00:00 \S+\s+\S+T0[01]:00:00.000Z/,
    );
    expect(list.stdout).toMatch(/hourly\s+0 \* \* \* \*\s+UTC\s+s\s+active, key hourly-runs/);
    const json = JSON.parse((await cli(urlA, "schedule", "list", "--json")).stdout);
    expect(json.schedules.find((s: { name: string }) => s.name === "nightly")).toMatchObject({
      priority: 3,
      requires: { gpu: "true" },
      params: { lr: 0.1 },
      concurrencyKey: null,
    });
    expect(json.schedules.find((s: { name: string }) => s.name === "hourly")).toMatchObject({
      concurrencyKey: "hourly-runs",
    });

    for (const [args, message] of [
      [["--cron", "61 * * * *"], /cron: "61 \* \* \* \*" is not a valid cron expression: /],
      [
        ["--cron", "* * * * *", "--timezone", "Moon/Base"],
        /timezone: "Moon\/Base" is not an IANA time zone name/,
      ],
      [["--cron", "* * *"], /cron: .* needs 5/],
    ] as const) {
      const bad = await cli(urlA, "schedule", "add", "bad", "--strategy", "s", ...args);
      expect(bad.code, bad.stdout).toBe(2);
      expect(bad.stderr).toMatch(message);
    }
    const badName = await cli(urlA, "schedule", "add", "bad name", "--cron", "* * * * *", "--strategy", "s");
    expect(badName.code).toBe(2);
    expect(badName.stderr).toMatch(/name: must be 1-100 letters/);
    const missing = await cli(urlA, "schedule", "add", "x", "--strategy", "s");
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("--cron");
    expect((await cli(urlA, "schedule", "list", "--json")).stdout).not.toContain('"bad');

    const paused = await cli(urlA, "schedule", "pause", "nightly");
    expect(paused.code, paused.stderr).toBe(0);
    expect(paused.stdout).toContain("schedule nightly paused; paused");
    expect((await cli(urlB, "schedule", "list")).stdout).toMatch(/nightly\s+.*\s+paused\s+-\s+-/);
    const resumed = await cli(urlB, "schedule", "resume", "nightly");
    expect(resumed.stdout).toMatch(/schedule nightly resumed; next tick .* 02:00:00/);
    const updated = await cli(
      urlA,
      "schedule",
      "update",
      "hourly",
      "--cron",
      "15 * * * *",
      "--strategy",
      "s2",
    );
    expect(updated.code, updated.stderr).toBe(0);
    expect(updated.stdout).toMatch(/schedule hourly updated: "15 \* \* \* \*" .*:15:00 UTC/);
    for (const name of ["nightly", "hourly"]) {
      const removed = await cli(urlA, "schedule", "remove", name);
      expect(removed.code, removed.stderr).toBe(0);
      expect(removed.stdout).toContain(`schedule ${name} removed`);
    }
    const gone = await cli(urlA, "schedule", "remove", "nightly");
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/schedule "nightly" does not exist \[HTTP 404\]/);
    expect((await cli(urlA, "schedule", "list")).stdout).toContain("no schedules");
  }, 120_000);

  it("one build per tick from two processes; after a kill -9 of one, the other keeps ticking", async () => {
    const added = await cli(urlA, "schedule", "add", "tick", "--cron", "* * * * * *", "--strategy", "tick-s");
    expect(added.code, added.stderr).toBe(0);
    const rows = () =>
      sql<TickRow>(
        schema,
        "SELECT idempotency_key, params, created_at FROM builds WHERE strategy_id = 'tick-s'",
      );
    await eventually(async () => (await rows()).length >= 4, 60_000);
    a.child.kill("SIGKILL");
    await a.exited;
    const killedAt = Date.now();
    await eventually(async () => {
      const after = (await rows()).filter((r) => r.created_at.getTime() > killedAt + 500);
      return after.length >= 4;
    }, 60_000);
    const paused = await cli(urlB, "schedule", "pause", "tick");
    expect(paused.code, paused.stderr).toBe(0);

    const ticks = (await rows()).sort(
      (x, y) => Date.parse(x.params.schedule.tick) - Date.parse(y.params.schedule.tick),
    );
    expect(new Set(ticks.map((t) => t.idempotency_key)).size).toBe(ticks.length);
    for (const t of ticks) expect(t.idempotency_key).toBe(`schedule:tick:${t.params.schedule.tick}`);
    // Consecutive builds: every second in between is a tick counted as missed, none is lost or doubled.
    for (let i = 1; i < ticks.length; i++) {
      const prev = ticks[i - 1] as TickRow;
      const cur = ticks[i] as TickRow;
      const gap = (Date.parse(cur.params.schedule.tick) - Date.parse(prev.params.schedule.tick)) / 1000;
      expect(gap, JSON.stringify([prev.params, cur.params])).toBe(1 + cur.params.schedule.missed);
    }
    const shown = await cli(urlB, "schedule", "show", "tick", "--json");
    expect(JSON.parse(shown.stdout).schedule).toMatchObject({ paused: true });
  }, 180_000);

  it("a connection of the survivor terminated in the middle of a tick: it stays up, no tick twice", async () => {
    const b = procs[1] as OculusProcess;
    // Each scheduled insert takes 400 ms and marks its session, so the test finds it mid-tick.
    await sql(
      schema,
      `CREATE FUNCTION slow_scheduled() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         PERFORM set_config('application_name', 'victim_${schema}', true);
         PERFORM pg_sleep(0.4);
         RETURN NEW;
       END $$`,
    );
    await sql(
      schema,
      "CREATE TRIGGER slow_scheduled BEFORE INSERT ON builds FOR EACH ROW WHEN (NEW.idempotency_key LIKE 'schedule:%') EXECUTE FUNCTION slow_scheduled()",
    );
    const added = await cli(
      urlB,
      "schedule",
      "add",
      "fault",
      "--cron",
      "* * * * * *",
      "--strategy",
      "fault-s",
    );
    expect(added.code, added.stderr).toBe(0);
    // Found and terminated in one statement: the name is the transaction's own (set_config local),
    // so the session is mid-tick when the statement sees it. A separate terminate, on a busy
    // machine, came after the tick had committed and only closed an idle connection.
    await eventually(async () => {
      const killed = await sql<{ pid: number }>(
        schema,
        "WITH victim AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE application_name = $1) SELECT pid FROM victim WHERE pg_terminate_backend(pid)",
        [`victim_${schema}`],
      );
      return killed.length > 0;
    }, 30_000);
    const killedAt = Date.now();
    const rows = () =>
      sql<TickRow>(
        schema,
        "SELECT idempotency_key, params, created_at FROM builds WHERE strategy_id = 'fault-s'",
      );
    await eventually(
      async () => (await rows()).filter((r) => r.created_at.getTime() > killedAt + 500).length >= 2,
      60_000,
    );
    expect(b.child.exitCode).toBeNull();
    expect((await cli(urlB, "schedule", "pause", "fault")).code).toBe(0);
    const ticks = (await rows()).sort(
      (x, y) => Date.parse(x.params.schedule.tick) - Date.parse(y.params.schedule.tick),
    );
    for (let i = 1; i < ticks.length; i++) {
      const prev = ticks[i - 1] as TickRow;
      const cur = ticks[i] as TickRow;
      const gap = (Date.parse(cur.params.schedule.tick) - Date.parse(prev.params.schedule.tick)) / 1000;
      expect(gap, JSON.stringify([prev.params, cur.params])).toBe(1 + cur.params.schedule.missed);
    }
    expect(b.output()).toContain("scheduler pass failed");
  }, 120_000);
});
