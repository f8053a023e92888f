/**
 * A fleet of API processes behind one load balancer: three `oculus up --workers 0` on one schema and
 * Redis prefix, with `oculus worker` processes. They share the work of the whole queue:
 * - one reconcile walk at a time: while the test holds the reconciler's advisory lock, no process
 *   rebuilds an index Redis lost; once it lets go, exactly one process does;
 * - one reaper pass at a time: while the test holds the reaper's lock, no process takes back the
 *   builds of a killed worker; once it lets go, each build is taken back once, by one process;
 * - every SSE stream is complete whichever process serves it: process B's /v1/events carries every
 *   event of builds submitted through process A and run by the workers, with Redis (pub/sub) and
 *   without (NOTIFY);
 * - the rate limit is one budget across the processes (through Redis), and with Redis gone each
 *   process counts on its own instead of failing.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type OculusProcess, spawnOculus } from "../helpers/oculus-cli.js";
import { fleetEnv } from "../helpers/oculus-fleet.js";
import { dropSchema, sql, TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Fleet {
  schema: string;
  prefix: string;
  urls: string[];
  processes: OculusProcess[];
  env: Record<string, string>;
}

async function startApis(redisUrl: string, count: number, extraEnv: Record<string, string>): Promise<Fleet> {
  const { schema, prefix, env } = fleetEnv("api_fleet", redisUrl, extraEnv);
  const fleet: Fleet = { schema, prefix, urls: [], processes: [], env };
  // One at a time: the first one runs the migrations.
  for (let i = 0; i < count; i++) {
    const api = spawnOculus(["up", "--port", "0", "--workers", "0"], env);
    fleet.processes.push(api);
    fleet.urls.push(
      await eventually(async () => {
        if (api.child.exitCode !== null) throw new Error(`oculus up exited:\n${api.output()}`);
        return /API listening on (http:\/\/\S+) /.exec(api.output())?.[1];
      }, 60_000),
    );
  }
  return fleet;
}

function startWorker(fleet: Fleet, id: string, extra: string[] = []): OculusProcess {
  const worker = spawnOculus(
    ["worker", "--id", id, "--capacity", "2", "--heartbeat-ms", "300", "--dead-after-ms", "2500", ...extra],
    fleet.env,
  );
  fleet.processes.push(worker);
  return worker;
}

async function stopFleet(fleet: Fleet | undefined): Promise<void> {
  if (!fleet) return;
  for (const p of fleet.processes) if (p.child.exitCode === null) p.child.kill("SIGKILL");
  await Promise.all(fleet.processes.map((p) => p.exited));
  await dropSchema(fleet.schema);
}

async function submit(url: string, params: Record<string, unknown> = { stepMs: 20 }): Promise<string> {
  const res = await fetch(`${url}/v1/builds`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ strategyId: "fleet", params }),
  });
  if (res.status !== 201) throw new Error(`submit: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { build: { id: string } }).build.id;
}

/** How many times each process printed `msg`. */
const logged = (fleet: Fleet, msg: string) => fleet.processes.map((p) => p.output().split(msg).length - 1);
const total = (counts: number[]) => counts.reduce((a, b) => a + b, 0);

/**
 * Holds a PostgreSQL advisory lock named like the queue's (hashtext of the name, as the queue's
 * try_*_lock.sql take it) on a connection of its own, until released.
 */
async function holdLock(name: string): Promise<() => Promise<void>> {
  const pg = (await import("pg")).default;
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  await client.query("SELECT pg_advisory_lock(hashtext($1))", [name]);
  return async () => {
    await client.query("SELECT pg_advisory_unlock(hashtext($1))", [name]);
    await client.end();
  };
}

/** The frames of an SSE stream as they arrive (id and event name; data parsed). */
function followEvents(url: string) {
  const frames: { id: string; event: string; data: { buildId?: string } }[] = [];
  const controller = new AbortController();
  const done = (async () => {
    const res = await fetch(url, { signal: controller.signal });
    if (res.status !== 200 || !res.body) throw new Error(`GET ${url}: ${res.status}`);
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of res.body) {
      buffer += decoder.decode(chunk as Uint8Array, { stream: true });
      for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const field = (name: string) =>
          frame
            .split("\n")
            .find((l) => l.startsWith(`${name}: `))
            ?.slice(name.length + 2);
        const data = field("data");
        if (data) frames.push({ id: field("id") ?? "", event: field("event") ?? "", data: JSON.parse(data) });
      }
    }
  })().catch(() => undefined);
  return {
    frames,
    async close() {
      controller.abort();
      await done;
    },
  };
}

describe("a fleet of three API processes on one queue", () => {
  let redis: RedisServer;
  let fleet: Fleet;

  beforeAll(async () => {
    redis = await RedisServer.start({ appendonly: false });
    // Drift checks twice a second, so that a lost index is noticed at once by every process.
    fleet = await startApis(redis.url, 3, { OCULUS_RECONCILE_INTERVAL_MS: "500", OCULUS_RATE_LIMIT: "0" });
  }, 120_000);

  afterAll(async () => {
    await stopFleet(fleet);
    await redis?.destroy();
  });

  it("one reconcile walk at a time: Redis lost its index; while the lock is held nobody walks, then exactly one process does", async () => {
    // No workers yet: the builds stay queued.
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await submit(fleet.urls[i % 3] as string));
    const client = redis.client();
    const index = `${fleet.prefix}:build_queue`;
    await eventually(async () => (await client.zcard(index)) === 5);
    const lostMessage = "Redis had lost its data (index marker missing)";
    expect(total(logged(fleet, lostMessage))).toBe(0);

    const release = await holdLock(`oculus:reconcile:${fleet.schema}`);
    try {
      await client.flushall();
      // Every process checks twice a second; none may walk while the lock is held.
      await sleep(3000);
      expect(await client.zcard(index)).toBe(0);
      expect(total(logged(fleet, lostMessage))).toBe(0);
    } finally {
      await release();
    }
    await eventually(async () => (await client.zcard(index)) === 5, 20_000);
    await sleep(2000); // the other processes' next checks find the marker back: no second walk
    const walks = logged(fleet, lostMessage);
    expect(total(walks), `walks per process: ${JSON.stringify(walks)}`).toBe(1);
    client.disconnect();

    // The queued builds run once workers come.
    startWorker(fleet, "fleet-w0");
    // One of them with an adaptive prefetch: builds of a tenth of a second get none, and run alike.
    const adaptive = startWorker(fleet, "fleet-w1", ["--prefetch", "auto"]);
    await eventually(async () => {
      const [row] = await sql<{ n: number }>(
        fleet.schema,
        "SELECT count(*)::int AS n FROM builds WHERE id = ANY($1::uuid[]) AND status = 'completed'",
        [ids],
      );
      return row?.n === ids.length;
    }, 60_000);
    expect(adaptive.output()).toMatch(/running \(capacity 2, prefetch auto, mode redis\)/);
  }, 90_000);

  /** Follows process B's /v1/events while builds are submitted through process A: every event arrives, in order, once. */
  async function streamIsComplete(): Promise<void> {
    const [a, b] = fleet.urls as [string, string];
    const stream = followEvents(`${b}/v1/events`);
    await eventually(async () => stream.frames.some((f) => f.event === "snapshot"));
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push(await submit(a));
    await eventually(async () => {
      const [row] = await sql<{ n: number }>(
        fleet.schema,
        "SELECT count(*)::int AS n FROM builds WHERE id = ANY($1::uuid[]) AND status = 'completed'",
        [ids],
      );
      return row?.n === ids.length;
    }, 60_000);
    const stored = await sql<{ id: number; build_id: string; type: string }>(
      fleet.schema,
      "SELECT id::int AS id, build_id::text AS build_id, type FROM build_events WHERE build_id = ANY($1::uuid[]) ORDER BY id",
      [ids],
    );
    const want = stored.map((e) => String(e.id));
    await eventually(async () => {
      const seen = new Set(stream.frames.map((f) => f.id));
      return want.every((id) => seen.has(id));
    }, 20_000).catch(() => {
      const seen = new Set(stream.frames.map((f) => f.id));
      const missing = stored.filter((e) => !seen.has(String(e.id)));
      throw new Error(
        `process B's stream missed ${missing.length} events: ${JSON.stringify(missing.slice(0, 10))}`,
      );
    });
    // In order, and each once.
    const received = stream.frames
      .filter((f) => f.data.buildId && ids.includes(f.data.buildId))
      .map((f) => f.id);
    expect(received).toEqual(want);
    await stream.close();
  }

  it("every SSE stream is complete whichever process serves it", async () => {
    await streamIsComplete();
  }, 90_000);

  it("one reaper pass at a time: a killed worker's builds are taken back once, by one process, after the lock is let go", async () => {
    const victim = startWorker(fleet, "fleet-victim");
    // Long builds (5 phases of 4 s): some are running on the victim when it is killed.
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(await submit(fleet.urls[i % 3] as string, { stepMs: 4000 }));
    const onVictim = await eventually(async () => {
      const rows = await sql<{ id: string }>(
        fleet.schema,
        "SELECT id::text AS id FROM builds WHERE status = 'running' AND worker_id = 'fleet-victim'",
      );
      return rows.length > 0 && rows.map((r) => r.id);
    }, 30_000);
    const tookBack = "reaper took back a build";
    const before = total(logged(fleet, tookBack));

    const release = await holdLock(`oculus:reaper:${fleet.schema}`);
    try {
      victim.child.kill("SIGKILL");
      await victim.exited;
      // Well past the lease (2.5 s): with the lock held, no process may take the builds back.
      await sleep(5000);
      const [row] = await sql<{ n: number }>(
        fleet.schema,
        "SELECT count(*)::int AS n FROM builds WHERE id = ANY($1::uuid[]) AND status = 'running' AND worker_id = 'fleet-victim'",
        [onVictim],
      );
      expect(row?.n).toBe(onVictim.length);
      expect(total(logged(fleet, tookBack))).toBe(before);
    } finally {
      await release();
    }
    await eventually(async () => {
      const [row] = await sql<{ n: number }>(
        fleet.schema,
        "SELECT count(*)::int AS n FROM builds WHERE id = ANY($1::uuid[]) AND worker_id = 'fleet-victim' AND status = 'running'",
        [onVictim],
      );
      return row?.n === 0;
    }, 20_000);
    const requeued = await sql<{ build_id: string; n: number }>(
      fleet.schema,
      "SELECT build_id::text AS build_id, count(*)::int AS n FROM build_events WHERE build_id = ANY($1::uuid[]) AND type = 'requeued' GROUP BY build_id",
      [onVictim],
    );
    expect(requeued.map((r) => r.n)).toEqual(onVictim.map(() => 1));
    expect(total(logged(fleet, tookBack)) - before).toBe(onVictim.length);
  }, 90_000);

  it("with Redis gone (NOTIFY instead of pub/sub), every SSE stream is still complete", async () => {
    await redis.kill9();
    await eventually(async () => {
      const modes = await Promise.all(
        fleet.urls.map(
          async (url) => ((await (await fetch(`${url}/health`)).json()) as { mode: string }).mode,
        ),
      );
      return modes.every((m) => m === "postgres");
    }, 30_000);
    await streamIsComplete();
  }, 90_000);
});

describe("the rate limit across two API processes", () => {
  let redis: RedisServer;
  let fleet: Fleet;

  beforeAll(async () => {
    redis = await RedisServer.start({ appendonly: false });
    fleet = await startApis(redis.url, 2, { OCULUS_RATE_LIMIT: "20" });
  }, 120_000);

  afterAll(async () => {
    await stopFleet(fleet);
    await redis?.destroy();
  });

  const get = async (url: string) => (await fetch(`${url}/v1/workers`)).status;

  it("is one budget through Redis; with Redis gone each process counts on its own, and answers", async () => {
    const [a, b] = fleet.urls as [string, string];
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) statuses.push(await get(i % 2 === 0 ? a : b));
    expect(statuses.filter((s) => s === 200).length, JSON.stringify(statuses)).toBe(20);
    expect(statuses.filter((s) => s === 429).length, JSON.stringify(statuses)).toBe(10);
    const client = redis.client();
    expect((await client.keys(`${fleet.prefix}:rate_limit:*`)).length).toBeGreaterThan(0);
    client.disconnect();

    // Redis gone: the shared budget (spent) is out of reach; each process starts its own window.
    await redis.kill9();
    const a2: number[] = [];
    for (let i = 0; i < 25; i++) a2.push(await get(a));
    expect(a2.filter((s) => s === 200).length, JSON.stringify(a2)).toBe(20);
    expect(a2.slice(20)).toEqual([429, 429, 429, 429, 429]);
    const b2: number[] = [];
    for (let i = 0; i < 21; i++) b2.push(await get(b));
    expect(b2.filter((s) => s === 200).length, JSON.stringify(b2)).toBe(20);
  }, 60_000);
});
