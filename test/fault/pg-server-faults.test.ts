/**
 * PostgreSQL's own faults against the whole system as operators run it: a private cluster, a private
 * Redis, `oculus up --workers 0` and two `oculus worker --command ...` processes whose builds print a
 * `::progress` line every ~50 ms, builds submitted over HTTP all along. Faults, one phase each:
 * restart (immediate, then fast) while builds run; pg_terminate_backend of every oculus connection
 * five times a second for ~10 s; read-only for a few seconds (a failover's standby); stopped for ~12 s.
 *
 * Each phase asserts: no oculus process exited; every acknowledged build completes exactly once, and
 * no two runs of a build overlap (each run of the command logs its start and end); the API answered
 * 503 (never 500) meanwhile. It prints the time from PostgreSQL's return to a new build running
 * (measured, reported, not asserted).
 */
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type OculusProcess, spawnOculus } from "../helpers/oculus-cli.js";
import { PgCluster } from "../helpers/pg-cluster.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SCHEMA = "oculus_faults";

/** A build: logs its run, prints progress every ~50 ms for ~1 s, then a result. */
function buildScript(runsLog: string): string {
  return [
    `echo "start $OCULUS_BUILD_ID $OCULUS_BUILD_LEASE $(date +%s%3N)" >> ${runsLog}`,
    "i=0",
    "while [ $i -lt 15 ]; do",
    "  i=$((i+1))",
    '  echo "::progress {\\"phase\\":\\"training\\",\\"iteration\\":$i,\\"maxIterations\\":15}"',
    "  sleep 0.05",
    "done",
    `echo "end $OCULUS_BUILD_ID $OCULUS_BUILD_LEASE $(date +%s%3N)" >> ${runsLog}`,
    'echo "::result {\\"ok\\":true}"',
  ].join("\n");
}

interface Tally {
  acknowledged: string[];
  statuses: Map<number, number>;
  /** When a request was last answered 503 (ms), and its Retry-After. */
  unavailable: { at: number; retryAfter: string | undefined; body: string }[];
  errors: string[];
}

/** Submits a build every `everyMs` and reads /health, until stopped; counts every answer. */
function submitter(baseUrl: string, everyMs: number) {
  const tally: Tally = { acknowledged: [], statuses: new Map(), unavailable: [], errors: [] };
  let running = true;
  const count = (status: number) => tally.statuses.set(status, (tally.statuses.get(status) ?? 0) + 1);
  const loop = (async () => {
    let n = 0;
    while (running) {
      n += 1;
      try {
        const res = await fetch(`${baseUrl}/v1/builds`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ strategyId: `s${n}` }),
          signal: AbortSignal.timeout(60_000),
        });
        const text = await res.text();
        count(res.status);
        if (res.status === 201) tally.acknowledged.push(JSON.parse(text).build.id);
        else if (res.status === 503)
          tally.unavailable.push({
            at: Date.now(),
            retryAfter: res.headers.get("retry-after") ?? undefined,
            body: text,
          });
        else tally.errors.push(`POST ${res.status}: ${text}`);
        const health = await fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(60_000) });
        await health.text();
        if (health.status !== 200 && health.status !== 503) tally.errors.push(`/health ${health.status}`);
      } catch (err) {
        tally.errors.push(`request failed: ${(err as Error).message}`);
      }
      await sleep(everyMs);
    }
  })();
  return {
    tally,
    async stop() {
      running = false;
      await loop;
    },
  };
}

interface Run {
  id: string;
  lease: number;
  start: number;
  end: number | undefined;
}

function readRuns(runsLog: string): Run[] {
  const runs = new Map<string, Run>();
  for (const line of readFileSync(runsLog, "utf8").split("\n")) {
    const [kind, id, lease, at] = line.split(" ");
    if (!id || !lease || !at) continue;
    const key = `${id}:${lease}`;
    if (kind === "start") runs.set(key, { id, lease: Number(lease), start: Number(at), end: undefined });
    else if (kind === "end") {
      const run = runs.get(key);
      if (run) run.end = Number(at);
    }
  }
  return [...runs.values()];
}

/** Runs of one build that overlap in time (a build running on two workers at once). */
function overlaps(runs: Run[]): string[] {
  const byBuild = new Map<string, Run[]>();
  for (const run of runs) byBuild.set(run.id, [...(byBuild.get(run.id) ?? []), run]);
  const found: string[] = [];
  for (const [id, list] of byBuild) {
    list.sort((a, b) => a.start - b.start);
    for (let i = 1; i < list.length; i++) {
      const previous = list[i - 1] as Run;
      if (previous.end === undefined || previous.end > (list[i] as Run).start)
        found.push(`${id}: lease ${previous.lease} and lease ${(list[i] as Run).lease} overlap`);
    }
  }
  return found;
}

describe("PostgreSQL faults under oculus up + two oculus worker processes", () => {
  let cluster: PgCluster;
  let redis: RedisServer;
  let dir: string;
  let runsLog: string;
  let up: OculusProcess;
  const workers: OculusProcess[] = [];
  let baseUrl: string;
  const report: string[] = [];

  const processes = () => [up, ...workers];
  const describeProcesses = () =>
    processes()
      .map((p, i) => `--- process ${i} (exit ${p.child.exitCode}) ---\n${p.output().slice(-3000)}`)
      .join("\n");

  beforeAll(async () => {
    cluster = await PgCluster.start();
    redis = await RedisServer.start({ appendonly: false });
    dir = mkdtempSync(path.join(tmpdir(), "oculus-pg-faults-"));
    runsLog = path.join(dir, "runs.log");
    writeFileSync(runsLog, "");
    const env = {
      DATABASE_URL: cluster.url(),
      REDIS_URL: redis.url,
      OCULUS_SCHEMA: SCHEMA,
      OCULUS_PREFIX: `pgfaults${process.pid}`,
      OCULUS_RECONCILE_INTERVAL_MS: "1000",
    };
    up = spawnOculus(["up", "--port", "0", "--workers", "0"], env);
    baseUrl = await eventually(async () => {
      if (up.child.exitCode !== null) throw new Error(`oculus up exited:\n${up.output()}`);
      const url = /API listening on (http:\/\/\S+) /.exec(up.output())?.[1];
      return url && `http://127.0.0.1:${new URL(url).port}`;
    }, 60_000);
    for (let i = 0; i < 2; i++) {
      workers.push(
        spawnOculus(
          [
            "worker",
            "--command",
            buildScript(runsLog),
            "--capacity",
            "2",
            "--heartbeat-ms",
            "200",
            // Longer than any outage here: a lease must not lapse while PostgreSQL is away (a worker
            // fencing itself is another part of issue 10, tested on its own).
            "--dead-after-ms",
            "30000",
            "--id",
            `fault-worker-${i}`,
          ],
          env,
        ),
      );
    }
    await eventually(async () => {
      const res = await fetch(`${baseUrl}/v1/workers`);
      const body = (await res.json()) as { workers: { status: string }[] };
      return body.workers.filter((w) => w.status === "active").length === 2;
    }, 60_000);
  }, 120_000);

  afterAll(async () => {
    for (const p of processes()) if (p && p.child.exitCode === null) p.child.kill("SIGKILL");
    await Promise.all(processes().map((p) => p?.exited));
    cluster?.destroy();
    await redis?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
    console.log(`PostgreSQL fault recovery (PostgreSQL back -> a new build running):\n${report.join("\n")}`);
  });

  /** Submits a probe until it is acknowledged; resolves when it runs (ms since `from`). */
  async function timeToRunning(from: number): Promise<number> {
    const id = await eventually(async () => {
      const res = await fetch(`${baseUrl}/v1/builds`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ strategyId: "probe", priority: 100 }),
      });
      return res.status === 201 && ((await res.json()) as { build: { id: string } }).build.id;
    }, 60_000);
    await eventually(async () => {
      const res = await fetch(`${baseUrl}/v1/builds/${id}`);
      const status = res.status === 200 && ((await res.json()) as { build: { status: string } }).build.status;
      return status === "running" || status === "completed";
    }, 60_000);
    return Date.now() - from;
  }

  /**
   * Runs `fault` while builds are submitted, then checks the phase: processes alive, every build
   * acknowledged completes exactly once, no overlapping runs, no 500. `fault` resolves to the time
   * PostgreSQL was back.
   */
  async function phase(name: string, fault: () => Promise<number>, expect503: boolean): Promise<void> {
    const load = submitter(baseUrl, 250);
    await sleep(1500); // builds running when the fault hits
    const faultAt = Date.now();
    let backAt: number;
    try {
      backAt = await fault();
    } finally {
      await sleep(500);
    }
    const recoveryMs = await timeToRunning(backAt).catch((err: Error) => {
      throw new Error(`${name}: no build ran after the fault: ${err.message}\n${describeProcesses()}`);
    });
    await sleep(1000);
    await load.stop();
    const { tally } = load;
    report.push(
      `${name}: ${recoveryMs} ms after PostgreSQL was back (${backAt - faultAt} ms fault); ` +
        `answers ${JSON.stringify(Object.fromEntries(tally.statuses))}, ${tally.acknowledged.length} builds acknowledged`,
    );
    const context = () => `${name}\n${JSON.stringify(tally.errors.slice(0, 10))}\n${describeProcesses()}`;
    expect(
      processes().map((p) => p.child.exitCode),
      context(),
    ).toEqual(processes().map(() => null));
    expect(tally.errors, context()).toEqual([]);
    expect([...tally.statuses.keys()].filter((s) => s !== 201 && s !== 503)).toEqual([]);
    for (const u of tally.unavailable) {
      expect(Number(u.retryAfter), u.body).toBeGreaterThanOrEqual(1);
      expect(u.body).toMatch(/"code":"store_unavailable"/);
    }
    if (expect503)
      expect(tally.unavailable.length, `${name}: no 503 while PostgreSQL was away`).toBeGreaterThan(0);
    // Every acknowledged build completes, exactly once.
    const ids = tally.acknowledged;
    await eventually(async () => {
      const rows = await cluster.sql<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${SCHEMA}.builds WHERE id = ANY($1::uuid[]) AND status = 'completed'`,
        [ids],
      );
      return rows[0]?.n === ids.length;
    }, 120_000).catch(async (err: Error) => {
      const rows = await cluster.sql(
        `SELECT id, status, lease, worker_id, retry_count, last_error FROM ${SCHEMA}.builds WHERE id = ANY($1::uuid[]) AND status <> 'completed'`,
        [ids],
      );
      throw new Error(
        `${name}: not all builds completed: ${err.message}\n${JSON.stringify(rows)}\n${context()}`,
      );
    });
    const twice = await cluster.sql<{ build_id: string; n: number }>(
      `SELECT build_id, count(*)::int AS n FROM ${SCHEMA}.build_events
       WHERE type = 'completed' GROUP BY build_id HAVING count(*) > 1`,
    );
    expect(twice, `${name}: builds completed more than once`).toEqual([]);
    expect(overlaps(readRuns(runsLog)), `${name}: runs of one build overlapped`).toEqual([]);
  }

  const terminateOculusBackends = () =>
    cluster
      .sql<{ n: number }>(
        `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name LIKE 'oculus%'`,
      )
      .then((rows) => rows[0]?.n ?? 0);

  it("restart -m immediate while builds run", async () => {
    await phase(
      "restart immediate",
      async () => {
        cluster.restart("immediate");
        return Date.now();
      },
      false,
    );
  }, 240_000);

  it("restart -m fast while builds run", async () => {
    await phase(
      "restart fast",
      async () => {
        cluster.restart("fast");
        return Date.now();
      },
      false,
    );
  }, 240_000);

  it("pg_terminate_backend of every oculus connection five times a second for 10 s", async () => {
    let terminated = 0;
    await phase(
      "terminate backends 5/s",
      async () => {
        const until = Date.now() + 10_000;
        while (Date.now() < until) {
          terminated += await terminateOculusBackends();
          await sleep(200);
        }
        return Date.now();
      },
      false,
    );
    expect(terminated).toBeGreaterThan(0);
    appendFileSync(runsLog, ""); // (the phase's runs are in the log with the others)
    report.push(`  (${terminated} backends terminated)`);
  }, 240_000);

  it("read-only for a few seconds: writes 503 with Retry-After, /health 503 read-only, then everything resumes", async () => {
    let healthWhileReadOnly: { status: number; body: { postgres?: { status?: string } } } | undefined;
    await phase(
      "read-only 4 s",
      async () => {
        await cluster.setReadOnly(true);
        try {
          healthWhileReadOnly = await eventually(async () => {
            const res = await fetch(`${baseUrl}/health`);
            const body = (await res.json()) as { postgres?: { status?: string } };
            return res.status === 503 && { status: res.status, body };
          }, 10_000);
          await sleep(4000);
        } finally {
          await cluster.setReadOnly(false);
        }
        return Date.now();
      },
      true,
    );
    expect(healthWhileReadOnly?.body.postgres?.status).toBe("read-only");
  }, 240_000);

  it("stopped for ~12 s, then started: 503 meanwhile, everything resumes by itself", async () => {
    await phase(
      "stopped 12 s",
      async () => {
        cluster.stop("fast");
        await sleep(12_000);
        cluster.startAgain();
        return Date.now();
      },
      true,
    );
  }, 240_000);
});
