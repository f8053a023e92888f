/**
 * Issue 16: `oculus up` and `oculus worker` started while PostgreSQL is away (a supervisor starting
 * the service before its database) wait for it instead of exiting: they say so, `up` answers /health
 * and its API with 503 meanwhile, and both serve as soon as PostgreSQL is back (the time from
 * PostgreSQL accepting connections to /health 200 is printed). A mistake in the configuration still
 * stops them at once with exit 2, and a signal while waiting exits 0.
 *
 * A private PostgreSQL (test/helpers/pg-cluster.ts), stopped and started again: never the shared one.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildQueue } from "../../src/index.js";
import { type OculusProcess, spawnOculus } from "../helpers/oculus-cli.js";
import { PgCluster } from "../helpers/pg-cluster.js";
import { eventually } from "../helpers/queue.js";

// biome-ignore lint/suspicious/noExplicitAny: tests read response bodies freely
type Json = any;

let cluster: PgCluster;
const running: OculusProcess[] = [];

beforeAll(async () => {
  cluster = await PgCluster.start();
});

afterAll(() => {
  for (const p of running) p.child.kill("SIGKILL");
  cluster?.destroy();
});

function start(args: string[], schema: string, database = "postgres"): OculusProcess {
  const p = spawnOculus(args, { DATABASE_URL: cluster.url(database), OCULUS_SCHEMA: schema });
  running.push(p);
  return p;
}

/** Resolves with the first capture of `pattern` in the output; fails (with the output) if the process exits. */
async function printed(p: OculusProcess, pattern: RegExp, timeoutMs = 45_000): Promise<string> {
  let gone = false;
  void p.exited.then(() => {
    gone = true;
  });
  return eventually(async () => {
    if (gone) throw new Error("exited");
    const match = pattern.exec(p.output());
    return match ? (match[1] ?? match[0]) : undefined;
  }, timeoutMs).catch((err: Error) => {
    throw new Error(`${err.message}: waited for ${pattern} in:\n${p.output()}`);
  });
}

async function call(
  url: string,
  init?: RequestInit,
): Promise<{ status: number; headers: Headers; body: Json }> {
  const res = await fetch(url, init);
  return { status: res.status, headers: res.headers, body: await res.json() };
}

const submit = (url: string, body: unknown) =>
  call(`${url}/v1/builds`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });

/** Polls `url` every 10 ms until it answers 200; the time since `since` (a refused connection: not yet). */
async function healthyAfter(url: string, since: number): Promise<number> {
  for (;;) {
    const res = await fetch(url).catch(() => undefined);
    if (res?.status === 200) return performance.now() - since;
    if (performance.now() - since > 60_000) throw new Error(`${url} not 200 60 s after PostgreSQL returned`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function stop(p: OculusProcess): Promise<number | null> {
  p.child.kill("SIGTERM");
  return p.exited;
}

describe("starting while PostgreSQL is away", () => {
  it("up and worker wait (503 meanwhile), then serve once PostgreSQL is back; a build submitted over HTTP runs", async () => {
    // A service restarted while its database is away: its schema exists (migrations are done).
    await (await BuildQueue.open({ databaseUrl: cluster.url(), schema: "start_wait" })).close();
    cluster.stop();
    const up = start(["up", "--port", "0", "--workers", "0"], "start_wait");
    const worker = start(["worker", "--metrics-port", "0"], "start_wait");
    try {
      const url = await printed(up, /until it is open, (http:\/\/\S+) answers 503/);
      await printed(
        up,
        /waiting for PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres: .*ECONNREFUSED/,
      );
      const metricsUrl = await printed(worker, /metrics port (http:\/\/\S+): \/health answers 503/);
      await printed(worker, /waiting for PostgreSQL at .*ECONNREFUSED/);

      const health = await call(`${url}/health`);
      expect(health.status).toBe(503);
      expect(health.body).toMatchObject({
        status: "unavailable",
        starting: true,
        postgres: { status: "down" },
      });
      const refused = await submit(url, { strategyId: "while-away" });
      expect(refused.status).toBe(503);
      expect(refused.headers.get("retry-after")).toBe("1");
      expect(refused.body.error.code).toBe("store_unavailable");
      expect((await fetch(`${url}/metrics`)).status).toBe(503);
      const workerHealth = await call(`${metricsUrl}/health`);
      expect(workerHealth.status).toBe(503);
      expect(workerHealth.body.status).toBe("starting");

      // Still waiting a while later (several attempts): neither gave up.
      await eventually(
        async () => (up.output().match(/^waiting for PostgreSQL/gm) ?? []).length >= 2,
        30_000,
      );
      expect(up.child.exitCode).toBeNull();
      expect(worker.child.exitCode).toBeNull();

      cluster.startAgain();
      const back = performance.now();
      const [upMs, workerMs] = await Promise.all([
        healthyAfter(`${url}/health`, back),
        healthyAfter(`${metricsUrl}/health`, back),
      ]);
      console.log(
        `PostgreSQL back (pg_ctl start returned) to /health 200: oculus up ${upMs.toFixed(0)} ms, oculus worker ${workerMs.toFixed(0)} ms`,
      );
      await printed(up, /PostgreSQL at .* answers: queue open after/);
      await printed(up, /API listening on http/);
      await printed(worker, /worker \S+ running/);
      expect((await call(`${metricsUrl}/health`)).status).toBe(200);

      const submitted = await submit(url, { strategyId: "after-return", params: { stepMs: 10 } });
      expect(submitted.status).toBe(201);
      const id = submitted.body.build.id as string;
      const done = await eventually(async () => {
        const res = await call(`${url}/v1/builds/${id}`);
        return res.body.build.status === "completed" ? res.body.build : undefined;
      }, 45_000);
      expect(done.workerId).toMatch(/./);
    } finally {
      expect(await stop(worker), worker.output()).toBe(0);
      expect(await stop(up), up.output()).toBe(0);
    }
  });

  it("a read-only PostgreSQL (a standby) refuses the migration: up waits until it is writable", async () => {
    await cluster.setReadOnly(true);
    let up: OculusProcess | undefined;
    try {
      up = start(["up", "--port", "0", "--workers", "0"], "start_read_only");
      const url = await printed(up, /until it is open, (http:\/\/\S+) answers 503/);
      await printed(up, /waiting for PostgreSQL at .*\(25006\): the server is read-only \(a standby\?\)/);
      expect((await call(`${url}/health`)).status).toBe(503);
      await cluster.setReadOnly(false);
      await eventually(async () => (await fetch(`${url}/health`)).status === 200, 45_000);
      expect((await submit(url, { strategyId: "after-standby" })).status).toBe(201);
    } finally {
      await cluster.setReadOnly(false);
      if (up) expect(await stop(up), up.output()).toBe(0);
    }
  });

  it("SIGTERM while waiting exits 0 (up and worker)", async () => {
    cluster.stop();
    try {
      const up = start(["up", "--port", "0", "--workers", "0"], "start_sigterm");
      const worker = start(["worker"], "start_sigterm");
      await printed(up, /waiting for PostgreSQL/);
      await printed(worker, /waiting for PostgreSQL/);
      expect(await stop(up), up.output()).toBe(0);
      expect(await stop(worker), worker.output()).toBe(0);
      expect(up.output()).toMatch(/shutting down/);
    } finally {
      cluster.startAgain();
    }
  });

  it("a database that does not exist or an unknown role stops up and worker at once with exit 2", async () => {
    const noDb = start(["up", "--port", "0", "--workers", "0"], "start_bad", "no_such_db");
    expect(await noDb.exited, noDb.output()).toBe(2);
    expect(noDb.output()).toMatch(
      /cannot open the queue on PostgreSQL at .*no_such_db: database "no_such_db" does not exist \(3D000\); check --database-url/,
    );
    expect(noDb.output()).not.toMatch(/waiting for PostgreSQL/);

    const url = cluster.url().replace("postgres@", "nobody:secret@");
    const noRole = spawnOculus(["worker"], { DATABASE_URL: url, OCULUS_SCHEMA: "start_bad" });
    running.push(noRole);
    expect(await noRole.exited, noRole.output()).toBe(2);
    expect(noRole.output()).toMatch(/nobody:\*\*\*@.*role "nobody" does not exist \(28000\)/);
    expect(noRole.output()).not.toContain("secret");
  });
});
