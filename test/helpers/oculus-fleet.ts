/**
 * The set-up operators run: `oculus up --workers 0` (the API) and separate `oculus worker` processes
 * (the built binary, demo builds), on one test schema and Redis prefix. Builds are submitted and read
 * over HTTP. `stop()` (for afterAll) kills every process it started.
 */
import { type OculusProcess, spawnOculus } from "./oculus-cli.js";
import { dropSchema, sql, TEST_DATABASE_URL, uniqueSchema } from "./postgres.js";
import { eventually } from "./queue.js";

export interface OculusFleet {
  url: string;
  api: OculusProcess;
  workers: OculusProcess[];
  schema: string;
  prefix: string;
  /** Submits a demo build over HTTP; resolves with its id and how long the request took. */
  submit(strategyId?: string): Promise<{ id: string; ms: number }>;
  build(id: string): Promise<{ status: string; startedAt: string | null }>;
  mode(): Promise<string>;
  /** Builds of the schema not completed (read from PostgreSQL directly). */
  unfinished(): Promise<number>;
  /** For failure messages: builds by status, and the warnings each process logged. */
  describe(): Promise<string>;
  /** How many times each process logged `msg` so far. */
  logged(msg: string): number[];
  stop(): Promise<void>;
}

let counter = 0;

/** A fresh schema and key prefix, and the environment that points `oculus` processes at them. */
export function fleetEnv(label: string, redisUrl: string, extraEnv: Record<string, string> = {}) {
  counter += 1;
  const schema = uniqueSchema(label);
  const prefix = `fleet${process.pid}x${counter}`;
  const env: Record<string, string> = {
    DATABASE_URL: TEST_DATABASE_URL,
    REDIS_URL: redisUrl,
    OCULUS_SCHEMA: schema,
    OCULUS_PREFIX: prefix,
    OCULUS_LOG_LEVEL: "info",
    ...extraEnv,
  };
  return { schema, prefix, env };
}

export async function startOculusFleet(
  label: string,
  redisUrl: string,
  workerCount: number,
  extraEnv: Record<string, string> = {},
): Promise<OculusFleet> {
  const { schema, prefix, env } = fleetEnv(label, redisUrl, extraEnv);
  const api = spawnOculus(["up", "--port", "0", "--workers", "0"], env);
  const url = await eventually(async () => {
    if (api.child.exitCode !== null) throw new Error(`oculus up exited:\n${api.output()}`);
    return /API listening on (http:\/\/\S+) /.exec(api.output())?.[1];
  }, 60_000).catch((err: Error) => {
    api.child.kill("SIGKILL");
    throw new Error(`${err.message}\n${api.output()}`);
  });
  const workers = Array.from({ length: workerCount }, (_, i) =>
    spawnOculus(
      [
        "worker",
        "--id",
        `${label}-w${i}`,
        "--capacity",
        "2",
        "--heartbeat-ms",
        "500",
        "--dead-after-ms",
        "5000",
      ],
      env,
    ),
  );
  const all = [api, ...workers];

  const fleet: OculusFleet = {
    url,
    api,
    workers,
    schema,
    prefix,
    async submit(strategyId = "fleet") {
      const started = performance.now();
      const res = await fetch(`${url}/v1/builds`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ strategyId, params: { stepMs: 5 } }),
      });
      const ms = performance.now() - started;
      if (res.status !== 201) throw new Error(`submit: ${res.status} ${await res.text()}`);
      const body = (await res.json()) as { build: { id: string } };
      return { id: body.build.id, ms };
    },
    async build(id) {
      const res = await fetch(`${url}/v1/builds/${id}`);
      if (res.status !== 200) throw new Error(`GET /v1/builds/${id}: ${res.status} ${await res.text()}`);
      const body = (await res.json()) as { build: { status: string; startedAt: string | null } };
      return body.build;
    },
    async mode() {
      const res = await fetch(`${url}/health`);
      return ((await res.json()) as { mode: string }).mode;
    },
    async unfinished() {
      const [row] = await sql<{ n: number }>(
        schema,
        "SELECT count(*)::int AS n FROM builds WHERE status <> 'completed'",
      );
      return row?.n ?? -1;
    },
    async describe() {
      const statuses = await sql<{ status: string; n: number }>(
        schema,
        "SELECT status, count(*)::int AS n FROM builds GROUP BY status ORDER BY status",
      );
      const warnings = all.map((p, i) => {
        const lines = p
          .output()
          .split("\n")
          .filter((l) => !/ (started|completed)$/.test(l));
        return `process ${i}:\n${lines.slice(-30).join("\n")}`;
      });
      // Sessions holding or waiting for locks on this schema's tables (a stuck transaction shows here).
      const sessions = await sql(
        schema,
        `SELECT DISTINCT a.pid, a.state, a.wait_event_type, a.wait_event, pg_blocking_pids(a.pid)::text AS blocked_by,
                (now() - a.xact_start)::text AS xact_age, left(a.query, 150) AS query
         FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
         JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE n.nspname = $1`,
        [schema],
      );
      return `builds: ${JSON.stringify(statuses)}\nsessions: ${JSON.stringify(sessions)}\n${warnings.join("\n")}`;
    },
    logged(msg) {
      return all.map((p) => p.output().split(msg).length - 1);
    },
    async stop() {
      for (const p of all) p.child.kill("SIGKILL");
      await Promise.all(all.map((p) => p.exited));
      await dropSchema(schema);
    },
  };
  return fleet;
}
