/**
 * An `oculus up` frozen (SIGSTOP) in the middle of a tick holds the schedule's row lock. The tick's
 * insert waits for a lock the test holds until A is frozen, so the freeze lands inside the tick's
 * transaction however loaded the machine is. PostgreSQL ends that idle transaction after the tick's
 * own idle timeout (5 s, set on the tick's transaction; the sessions' default is set to 10 minutes
 * here, so only that can end it), another `oculus up` takes the schedule over while the first is
 * still frozen, and when the first is let go (SIGCONT) its failed pass is logged and it goes on.
 * Every tick has exactly one build throughout.
 */
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { type OculusProcess, oculus, spawnOculus } from "../helpers/oculus-cli.js";
import { fleetEnv } from "../helpers/oculus-fleet.js";
import { dropSchema, sql, TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";

interface TickRow {
  idempotency_key: string;
  params: { schedule: { tick: string; missed: number } };
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

describe("an oculus up frozen mid-tick", () => {
  const { schema, env: fleet } = fleetEnv("sched_frozen", "");
  const env: Record<string, string> = { ...fleet, OCULUS_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS: "600000" };
  delete env.REDIS_URL;
  const procs: OculusProcess[] = [];
  const gate = new pg.Client({ connectionString: TEST_DATABASE_URL });

  afterAll(async () => {
    for (const p of procs) {
      p.child.kill("SIGCONT");
      p.child.kill("SIGKILL");
    }
    await Promise.all(procs.map((p) => p.exited));
    await gate.end().catch(() => undefined);
    await dropSchema(schema);
  });

  it("loses the schedule's lock after the tick's idle timeout; another process ticks; no tick twice", async () => {
    // The test holds this lock while A's tick waits for it inside the trigger, so A is frozen while
    // its tick's transaction is open whatever the machine's load (a timed sleep could end first).
    await gate.connect();
    await gate.query("SELECT pg_advisory_lock(7215, hashtext($1))", [schema]);
    const a = await startUp(env);
    procs.push(a.proc);
    await sql(
      schema,
      `CREATE FUNCTION gated_scheduled() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         PERFORM set_config('application_name', 'frozen_${schema}', true);
         PERFORM pg_advisory_xact_lock_shared(7215, hashtext('${schema}'));
         RETURN NEW;
       END $$`,
    );
    await sql(
      schema,
      "CREATE TRIGGER gated_scheduled BEFORE INSERT ON builds FOR EACH ROW WHEN (NEW.idempotency_key LIKE 'schedule:%') EXECUTE FUNCTION gated_scheduled()",
    );
    const added = await oculus(
      ["schedule", "add", "frozen", "--cron", "* * * * * *", "--strategy", "frozen-s"],
      { OCULUS_URL: a.url },
    );
    expect(added.code, added.stderr).toBe(0);
    // A's tick is inside its transaction, waiting for the gate: freeze A there, then open the gate so
    // the tick's insert ends and its transaction sits idle in a frozen process.
    await eventually(async () => {
      const found = await sql<{ pid: number }>(
        schema,
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        [`frozen_${schema}`],
      );
      return found.length > 0;
    }, 30_000);
    a.proc.child.kill("SIGSTOP");
    const frozenAt = Date.now();
    await gate.end();

    const b = await startUp(env);
    procs.push(b.proc);
    const rows = () =>
      sql<TickRow>(
        schema,
        "SELECT idempotency_key, params, created_at FROM builds WHERE strategy_id = 'frozen-s'",
      );
    // B ticks while A is still frozen: A's lock went with its session.
    await eventually(
      async () => (await rows()).filter((r) => r.created_at.getTime() > frozenAt).length >= 2,
      60_000,
    );

    a.proc.child.kill("SIGCONT");
    await eventually(async () => a.proc.output().includes("scheduler pass failed"), 30_000);
    const resumedAt = Date.now();
    await eventually(
      async () => (await rows()).filter((r) => r.created_at.getTime() > resumedAt).length >= 3,
      60_000,
    );
    expect(a.proc.child.exitCode).toBeNull();
    expect((await oculus(["schedule", "pause", "frozen"], { OCULUS_URL: b.url })).code).toBe(0);

    const ticks = (await rows()).sort(
      (x, y) => Date.parse(x.params.schedule.tick) - Date.parse(y.params.schedule.tick),
    );
    expect(new Set(ticks.map((t) => t.idempotency_key)).size).toBe(ticks.length);
    for (let i = 1; i < ticks.length; i++) {
      const prev = ticks[i - 1] as TickRow;
      const cur = ticks[i] as TickRow;
      const gap = (Date.parse(cur.params.schedule.tick) - Date.parse(prev.params.schedule.tick)) / 1000;
      expect(gap, JSON.stringify([prev.params, cur.params])).toBe(1 + cur.params.schedule.missed);
    }
  }, 240_000);
});
