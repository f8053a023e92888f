/**
 * A PostgreSQL failover under load, as a virtual IP or a proxy in front of Patroni does it: a private
 * primary with a streaming replica (synchronous replication, so that no acknowledged commit is lost
 * at promotion) behind a TCP proxy; two `oculus up --workers 0` and two `oculus worker` processes
 * connect through the proxy; Redis is up all along; builds are submitted to both APIs all along.
 *
 * The switch: the old primary is made read-only (a demotion: its sessions now answer writes with
 * 25006), the replica is promoted (`pg_ctl promote`), the proxy is switched to it (connections open
 * through it stay on the old server, as after a virtual IP moved), and a few seconds later the old
 * primary is stopped. Asserts: no process exited; every process reconnected to the new primary by
 * itself (the old one had no oculus session left before it was stopped); every acknowledged build
 * (201) completes exactly once on the new primary; the API answered 201 or 503, never 500. Reports
 * how long submits were refused (503) around the switch.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type OculusProcess, spawnOculus } from "../helpers/oculus-cli.js";
import { PgCluster } from "../helpers/pg-cluster.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SCHEMA = "oculus_failover";

interface Answer {
  at: number;
  status: number;
  id?: string;
  body?: string;
}

/** Submits a build every `everyMs`, round robin over `urls`, until stopped; keeps every answer. */
function submitter(urls: string[], everyMs: number) {
  const answers: Answer[] = [];
  const errors: string[] = [];
  let running = true;
  const loop = (async () => {
    for (let n = 0; running; n++) {
      const url = urls[n % urls.length] as string;
      try {
        const res = await fetch(`${url}/v1/builds`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ strategyId: `failover${n}`, params: { stepMs: 20 } }),
          signal: AbortSignal.timeout(60_000),
        });
        const text = await res.text();
        const answer: Answer = { at: Date.now(), status: res.status };
        if (res.status === 201) answer.id = (JSON.parse(text) as { build: { id: string } }).build.id;
        else answer.body = text;
        answers.push(answer);
      } catch (err) {
        errors.push(`request failed: ${(err as Error).message}`);
      }
      await sleep(everyMs);
    }
  })();
  return {
    answers,
    errors,
    async stop() {
      running = false;
      await loop;
    },
  };
}

describe("PostgreSQL failover: replica promoted, proxy switched, old primary read-only then stopped", () => {
  let primary: PgCluster;
  let replica: PgCluster;
  let proxy: TcpProxy;
  let redis: RedisServer;
  const apis: OculusProcess[] = [];
  const workers: OculusProcess[] = [];
  const urls: string[] = [];
  const processes = () => [...apis, ...workers];
  const describeProcesses = () =>
    processes()
      .map((p, i) => `--- process ${i} (exit ${p.child.exitCode}) ---\n${p.output().slice(-2500)}`)
      .join("\n");

  beforeAll(async () => {
    primary = await PgCluster.start();
    replica = await primary.startReplica();
    await primary.synchronous(true);
    proxy = await TcpProxy.start(primary.port);
    redis = await RedisServer.start({ appendonly: false });
    const env = {
      DATABASE_URL: `postgres://postgres@127.0.0.1:${proxy.port}/postgres`,
      REDIS_URL: redis.url,
      OCULUS_SCHEMA: SCHEMA,
      OCULUS_PREFIX: `pgfailover${process.pid}`,
      OCULUS_RECONCILE_INTERVAL_MS: "1000",
      // Shorter than the defaults, so that a connection stuck on the old server is given up quickly.
      OCULUS_PG_CONNECT_TIMEOUT_MS: "3000",
    };
    for (let i = 0; i < 2; i++) {
      const api = spawnOculus(["up", "--port", "0", "--workers", "0"], env);
      apis.push(api);
      urls.push(
        await eventually(async () => {
          if (api.child.exitCode !== null) throw new Error(`oculus up exited:\n${api.output()}`);
          return /API listening on (http:\/\/\S+) /.exec(api.output())?.[1];
        }, 60_000),
      );
    }
    for (let i = 0; i < 2; i++) {
      workers.push(
        spawnOculus(
          [
            "worker",
            "--id",
            `failover-w${i}`,
            "--capacity",
            "2",
            "--heartbeat-ms",
            "300",
            // Longer than the switch: no lease lapses meanwhile (a worker fencing itself is tested
            // elsewhere); a build runs once.
            "--dead-after-ms",
            "30000",
          ],
          env,
        ),
      );
    }
    await eventually(async () => {
      const res = await fetch(`${urls[0]}/v1/workers`);
      const body = (await res.json()) as { workers: { status: string }[] };
      return body.workers.filter((w) => w.status === "active").length === 2;
    }, 60_000);
  }, 120_000);

  afterAll(async () => {
    for (const p of processes()) if (p.child.exitCode === null) p.child.kill("SIGKILL");
    await Promise.all(processes().map((p) => p.exited));
    await proxy?.close();
    primary?.destroy();
    replica?.destroy();
    await redis?.destroy();
  });

  it("every process reconnects to the promoted replica; every acknowledged build completes exactly once", async () => {
    const load = submitter(urls, 100);
    await eventually(async () => load.answers.filter((a) => a.status === 201).length >= 10, 30_000);

    // The switch, as an operator's tooling does it.
    const switchAt = Date.now();
    await primary.setReadOnly(true);
    await replica.promote();
    proxy.retarget(replica.port);
    const switchedAt = Date.now();

    // The old primary stays up (read-only) for a while: every oculus session on it must notice (a
    // write answered 25006, or an idle one recycled) and reconnect through the proxy by itself.
    const oculusSessionsOnOldPrimary = () =>
      primary
        .sql<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name LIKE 'oculus%'`,
        )
        .then((rows) => rows[0]?.n ?? -1);
    const left = await eventually(async () => (await oculusSessionsOnOldPrimary()) === 0, 30_000).then(
      () => 0,
      async () => oculusSessionsOnOldPrimary(),
    );
    const sessionsGoneAt = Date.now();
    const stuck =
      left === 0
        ? []
        : await primary.sql(
            `SELECT pid, application_name, state, backend_start, left(query, 80) AS query FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name LIKE 'oculus%'`,
          );
    primary.stop("fast");

    // Load keeps going on the new primary, then stops.
    const acknowledgedAtStop = load.answers.filter((a) => a.status === 201).length;
    await eventually(
      async () => load.answers.filter((a) => a.status === 201).length >= acknowledgedAtStop + 10,
      60_000,
    ).catch((err: Error) => {
      throw new Error(`no submit acknowledged after the switch: ${err.message}\n${describeProcesses()}`);
    });
    await load.stop();

    const refused = load.answers.filter((a) => a.status === 503);
    const firstRefused = refused[0]?.at;
    const lastRefused = refused[refused.length - 1]?.at;
    const statuses = new Map<number, number>();
    for (const a of load.answers) statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
    const ids = load.answers.flatMap((a) => (a.id ? [a.id] : []));
    console.log(
      `PostgreSQL failover: switch (read-only + promote + proxy) took ${switchedAt - switchAt} ms; ` +
        `oculus sessions left the old primary ${sessionsGoneAt - switchedAt} ms after the proxy switch; ` +
        `submits refused (503) ${refused.length} times` +
        (firstRefused && lastRefused
          ? `, from ${firstRefused - switchAt} ms to ${lastRefused - switchAt} ms after the switch began`
          : "") +
        `; answers ${JSON.stringify(Object.fromEntries(statuses))}, ${ids.length} builds acknowledged`,
    );

    const context = () => `${JSON.stringify(load.errors.slice(0, 10))}\n${describeProcesses()}`;
    expect(left, `oculus sessions still on the old primary: ${JSON.stringify(stuck)}\n${context()}`).toBe(0);
    expect(
      processes().map((p) => p.child.exitCode),
      context(),
    ).toEqual(processes().map(() => null));
    expect(load.errors, context()).toEqual([]);
    expect(
      [...statuses.keys()].filter((s) => s !== 201 && s !== 503),
      context(),
    ).toEqual([]);
    for (const a of refused) expect(a.body).toMatch(/"code":"store_unavailable"/);

    // Every acknowledged build is on the new primary and completes, exactly once.
    await eventually(async () => {
      const rows = await replica.sql<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${SCHEMA}.builds WHERE id = ANY($1::uuid[]) AND status = 'completed'`,
        [ids],
      );
      return rows[0]?.n === ids.length;
    }, 60_000).catch(async (err: Error) => {
      const rows = await replica.sql(
        `SELECT id, status, lease, worker_id, retry_count, last_error FROM ${SCHEMA}.builds
         WHERE id = ANY($1::uuid[]) AND status <> 'completed'`,
        [ids],
      );
      const present = await replica.sql<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${SCHEMA}.builds WHERE id = ANY($1::uuid[])`,
        [ids],
      );
      throw new Error(
        `not every acknowledged build completed: ${err.message}; ${present[0]?.n}/${ids.length} present\n` +
          `${JSON.stringify(rows)}\n${context()}`,
      );
    });
    // Exactly once: one completion each, and no run that ended otherwise (a failed run, retried, is
    // a second run). A claim abandoned before it ran (the claim timeout under a very busy machine)
    // is no run: it is only reported.
    const wrong = await replica.sql<{ build_id: string; type: string; n: number }>(
      `SELECT build_id, type, count(*)::int AS n FROM ${SCHEMA}.build_events
       WHERE build_id = ANY($1::uuid[]) AND type IN ('completed', 'failed', 'retry_scheduled')
       GROUP BY build_id, type HAVING type <> 'completed' OR count(*) > 1`,
      [ids],
    );
    const history = await replica.sql(
      `SELECT build_id, type, actor, from_status, to_status, data FROM ${SCHEMA}.build_events
       WHERE build_id = ANY($1::uuid[]) AND type <> 'progress' ORDER BY id`,
      [wrong.map((t) => t.build_id)],
    );
    expect(
      wrong,
      `builds that ran more than once:\n${history.map((h) => JSON.stringify(h)).join("\n")}\n${context()}`,
    ).toEqual([]);
    const [reclaimed] = await replica.sql<{ n: number }>(
      `SELECT count(*)::int AS n FROM (SELECT build_id FROM ${SCHEMA}.build_events
       WHERE build_id = ANY($1::uuid[]) AND type = 'claimed' GROUP BY build_id HAVING count(*) > 1) x`,
      [ids],
    );
    if ((reclaimed?.n ?? 0) > 0) console.log(`(${reclaimed?.n} builds were claimed more than once)`);
  }, 180_000);
});

/**
 * Asynchronous replication loses what the replica had not received when it is promoted, acknowledged
 * builds included: the replication link is cut (a proxy between the replica and the primary), builds
 * are submitted (201: committed on the old primary only), the replica is promoted and the address
 * switched to it. The Redis index then holds ids PostgreSQL no longer has: the drift check sees more
 * ids than queued builds and the reconciler drops them; the builds PostgreSQL kept all run, the lost
 * ones never do (GET answers 404). This is why the failover above uses synchronous replication.
 */
describe("PostgreSQL failover with asynchronous replication: acknowledged builds can be lost", () => {
  let primary: PgCluster;
  let replica: PgCluster;
  let replication: TcpProxy;
  let proxy: TcpProxy;
  let redis: RedisServer;
  const processes: OculusProcess[] = [];
  const ASYNC_SCHEMA = "oculus_async_failover";

  afterAll(async () => {
    for (const p of processes) if (p.child.exitCode === null) p.child.kill("SIGKILL");
    await Promise.all(processes.map((p) => p.exited));
    await proxy?.close();
    await replication?.close();
    primary?.destroy();
    replica?.destroy();
    await redis?.destroy();
  });

  it("the index's ids of lost builds are dropped by the reconciler; the builds PostgreSQL kept all run", async () => {
    primary = await PgCluster.start();
    replication = await TcpProxy.start(primary.port);
    replica = await primary.startReplica({ primaryPort: replication.port });
    proxy = await TcpProxy.start(primary.port);
    redis = await RedisServer.start({ appendonly: false });
    const env = {
      DATABASE_URL: `postgres://postgres@127.0.0.1:${proxy.port}/postgres`,
      REDIS_URL: redis.url,
      OCULUS_SCHEMA: ASYNC_SCHEMA,
      OCULUS_PREFIX: `pgasync${process.pid}`,
      OCULUS_RECONCILE_INTERVAL_MS: "500",
    };
    const up = spawnOculus(["up", "--port", "0", "--workers", "0"], env);
    processes.push(up);
    const url = await eventually(async () => {
      if (up.child.exitCode !== null) throw new Error(`oculus up exited:\n${up.output()}`);
      return /API listening on (http:\/\/\S+) /.exec(up.output())?.[1];
    }, 60_000);
    const submit = async () => {
      const res = await fetch(`${url}/v1/builds`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ strategyId: "async", params: { stepMs: 5 } }),
      });
      expect(res.status).toBe(201);
      return ((await res.json()) as { build: { id: string } }).build.id;
    };
    const kept: string[] = [];
    for (let i = 0; i < 5; i++) kept.push(await submit());
    // The replica has them (replayed) before the link is cut.
    await eventually(async () => {
      const rows = await replica
        .sql<{ n: number }>(`SELECT count(*)::int AS n FROM ${ASYNC_SCHEMA}.builds`)
        .catch(() => [{ n: -1 }]);
      return rows[0]?.n === kept.length;
    }, 30_000);

    replication.cut(); // the replica stops receiving; the primary goes on acknowledging (async)
    const lost: string[] = [];
    for (let i = 0; i < 5; i++) lost.push(await submit());
    const indexKey = `pgasync${process.pid}:build_queue`;
    const client = redis.client();
    expect(await client.zcard(indexKey)).toBe(kept.length + lost.length);

    primary.stop("immediate");
    await replica.promote();
    proxy.retarget(replica.port, { cutOpen: true });
    const promotedAt = Date.now();

    // The reconciler drops the ids PostgreSQL no longer has; the index equals the kept builds.
    await eventually(async () => (await client.zcard(indexKey)) === kept.length, 30_000).catch(
      async (err: Error) => {
        throw new Error(`${err.message}: index ${await client.zcard(indexKey)}\n${up.output().slice(-3000)}`);
      },
    );
    const cleanAfterMs = Date.now() - promotedAt;
    const left = new Set(await client.zrange(indexKey, 0, -1));
    expect(lost.filter((id) => left.has(id))).toEqual([]);
    client.disconnect();
    for (const id of lost) expect((await fetch(`${url}/v1/builds/${id}`)).status).toBe(404);

    // A worker runs every build PostgreSQL kept, and new ones; the lost ones never.
    const fresh = await eventually(async () => submit().catch(() => undefined), 30_000);
    processes.push(
      spawnOculus(["worker", "--id", "async-w0", "--capacity", "2", "--heartbeat-ms", "300"], env),
    );
    const all = [...kept, fresh];
    await eventually(async () => {
      const rows = await replica.sql<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${ASYNC_SCHEMA}.builds WHERE id = ANY($1::uuid[]) AND status = 'completed'`,
        [all],
      );
      return rows[0]?.n === all.length;
    }, 60_000);
    console.log(
      `asynchronous replication: ${lost.length} acknowledged builds lost at promotion; their ids were dropped from the Redis index ${cleanAfterMs} ms after the promotion`,
    );
  }, 120_000);
});
