/**
 * `npm start` runs `oculus up` on the embedded store: it must come up with no server at all, answer
 * /health, take a build over HTTP, run the demo builds to completion and shut down cleanly on
 * SIGTERM. Several `oculus up` processes share one PostgreSQL and Redis; an open API is refused
 * beyond loopback.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BuildQueue } from "../../src/index.js";
import { type OculusProcess, spawnOculus } from "../helpers/oculus-cli.js";
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

interface UpProcess extends OculusProcess {
  url: string;
}

/** Starts `oculus up` with `args` and only `env` (plus PATH); resolves once it says where it listens. */
async function startUp(args: string[], env: Record<string, string>): Promise<UpProcess> {
  const started = spawnOculus(["up", "--port", "0", ...args], env);
  let gone = false;
  void started.exited.then(() => {
    gone = true;
  });
  const url = await eventually(async () => {
    if (gone) throw new Error(`oculus up exited:\n${started.output()}`);
    return /API listening on (http:\/\/\S+) /.exec(started.output())?.[1];
  }, 45_000).catch((err: Error) => {
    started.child.kill("SIGKILL");
    throw new Error(`${err.message}\n${started.output()}`);
  });
  return { ...started, url };
}

/**
 * Waits until the process has printed a line matching `pattern` (lines printed after the "listening"
 * line may reach this process in later reads), then asserts it, so a failure shows the output.
 */
async function printed(up: UpProcess, pattern: RegExp): Promise<void> {
  await eventually(async () => pattern.test(up.output()), 10_000).catch(() => undefined);
  expect(up.output()).toMatch(pattern);
}

async function stopUp(up: UpProcess): Promise<number | null> {
  up.child.kill("SIGTERM");
  return up.exited;
}

// biome-ignore lint/suspicious/noExplicitAny: tests read response bodies freely
const json = async (res: Response): Promise<{ status: number; body: any }> => ({
  status: res.status,
  body: await res.json(),
});

describe("oculus up (the main command)", () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "oculus-up-"));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it("on the embedded store: /health, a build submitted over HTTP and the demo builds complete; SIGTERM exits 0", async () => {
    const up = await startUp(["--demo", "--demo-step-ms", "20", "--workers", "2"], {
      OCULUS_DATA_DIR: dataDir,
    });
    let exitCode: number | null;
    try {
      expect(up.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      await printed(up, /embedded PostgreSQL \(PGlite/);
      await printed(up, /Redis none; mode postgres/);
      await printed(up, /no tokens configured: .*\(loopback\)/);
      const health = await eventually(async () => {
        const res = await json(await fetch(`${up.url}/health`));
        return res.status === 200 ? res : undefined;
      });
      expect(health.body).toMatchObject({ status: "ok", mode: "postgres", postgres: { status: "up" } });

      const submitted = await json(
        await fetch(`${up.url}/v1/builds`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ strategyId: "http-demo", params: { stepMs: 20 } }),
        }),
      );
      expect(submitted.status).toBe(201);
      const id = submitted.body.build.id as string;
      const done = await eventually(async () => {
        const res = await json(await fetch(`${up.url}/v1/builds/${id}`));
        return res.body.build.status === "completed" ? res.body.build : undefined;
      }, 45_000);
      expect(done.result).toMatchObject({ image: "oculus/http-demo:demo" });
      // The whole log, from the embedded store.
      const log = await (await fetch(`${up.url}/v1/builds/${id}/logs`)).text();
      expect(log).toMatch(/^--- attempt 1 \(lease \d+\) on worker .* ---\ndesigning\.\.\.\ntraining\.\.\./);
      await eventually(async () => (up.output().match(/completed$/gm) ?? []).length >= 3, 45_000);
    } finally {
      exitCode = await stopUp(up);
    }
    expect(exitCode, up.output()).toBe(0);
    expect(up.output()).toMatch(/shutting down: .*; press Ctrl-C again .* to exit at once/);

    // The record survived the process: every build is completed in the embedded store.
    const queue = await BuildQueue.open({ dataDir });
    try {
      const res = await queue.store.db.query<{ status: string }>("SELECT status FROM builds");
      expect(res.rows.map((r) => r.status)).toEqual(["completed", "completed", "completed"]);
    } finally {
      await queue.close();
    }
  });

  it("runs no local worker unless asked: --workers N needs --command or --demo (exit 2)", async () => {
    const refused = spawnOculus(["up", "--port", "0", "--workers", "2"], {
      OCULUS_DATA_DIR: path.join(dataDir, "never"),
    });
    expect(await refused.exited).toBe(2);
    expect(refused.output()).toMatch(/--workers: local workers need --command CMD .* or --demo/);

    // A real store without flags: the API only; a submitted build waits for a real worker.
    const schema = uniqueSchema("up_no_demo");
    const up = await startUp([], {
      DATABASE_URL: TEST_DATABASE_URL,
      OCULUS_SCHEMA: schema,
      OCULUS_LOG_LEVEL: "info",
      OCULUS_LOG_FORMAT: "pretty",
    });
    try {
      await printed(up, /no local workers: builds run on `oculus worker --command CMD` processes/);
      // Readable log lines, and no line per HTTP request at info.
      await printed(up, /^\d\d:\d\d:\d\d {2}INFO +build queue opening {2}postgres=/m);
      expect(up.output()).not.toMatch(/^\{"level"/m);
      const res = await json(
        await fetch(`${up.url}/v1/builds`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ strategyId: "real-build" }),
        }),
      );
      expect(res.status).toBe(201);
      const workers = await json(await fetch(`${up.url}/v1/workers`));
      expect(workers.body.workers).toEqual([]);
      expect((await json(await fetch(`${up.url}/v1/builds/${res.body.build.id}`))).body.build.status).toBe(
        "queued",
      );
      expect(up.output()).not.toMatch(/request completed|incoming request/);
    } finally {
      await stopUp(up);
      await dropSchema(schema);
    }
  });

  it("refuses to listen beyond loopback without tokens (exit 2, before opening anything)", async () => {
    const up = spawnOculus(["up", "--host", "0.0.0.0", "--port", "0"], {
      OCULUS_DATA_DIR: path.join(dataDir, "never"),
    });
    expect(await up.exited).toBe(2);
    expect(up.output()).toMatch(/refusing to listen on 0\.0\.0\.0 without authentication/);
  });

  it("a bad --port or token configuration stops start-up with exit 2", async () => {
    for (const [args, env, message] of [
      [["--port", "http"], {}, /--port \/ OCULUS_PORT/],
      [[], { OCULUS_PORT: "70000" }, /--port \/ OCULUS_PORT/],
      [[], { OCULUS_TOKENS: "ci:read:short" }, /OCULUS_TOKENS/],
      [
        [],
        { OCULUS_CORS_ORIGINS: "http://localhost:3000,https://app.example.com/" },
        /invalid OCULUS_CORS_ORIGINS: "https:\/\/app\.example\.com\/" is not an origin/,
      ],
      [
        [],
        { OCULUS_TRUST_PROXY: "10.0.0.0/8,proxy.internal" },
        /invalid OCULUS_TRUST_PROXY: "proxy\.internal" is not an IP address/,
      ],
      // The hardening settings (each variable's parsing: test/unit/http-settings.test.ts).
      [
        [],
        { OCULUS_HTTP_REQUEST_TIMEOUT_MS: "soon" },
        /invalid OCULUS_HTTP_REQUEST_TIMEOUT_MS: must be a whole number/,
      ],
      [
        [],
        { OCULUS_HTTP_REQUEST_TIMEOUT_MS: "10000", OCULUS_HTTP_HEADERS_TIMEOUT_MS: "20000" },
        /invalid OCULUS_HTTP_HEADERS_TIMEOUT_MS: 20000 ms must not exceed OCULUS_HTTP_REQUEST_TIMEOUT_MS/,
      ],
      [
        [],
        { OCULUS_HTTP_CONNECTION_TIMEOUT_MS: "5000" },
        /invalid OCULUS_HTTP_CONNECTION_TIMEOUT_MS: 5000 ms must exceed the SSE heartbeat interval/,
      ],
      [[], { OCULUS_HTTP_ALLOWED_HOSTS: "http://queue.lan" }, /invalid OCULUS_HTTP_ALLOWED_HOSTS/],
      [
        [],
        { OCULUS_RETENTION_DAYS: "-3" },
        /--retention-days \/ OCULUS_RETENTION_DAYS: must be a number of days/,
      ],
    ] as const) {
      const up = spawnOculus(["up", ...args], { OCULUS_DATA_DIR: path.join(dataDir, "never"), ...env });
      expect(await up.exited).toBe(2);
      expect(up.output()).toMatch(message);
    }
  });
});

describe("several oculus up processes on one PostgreSQL and Redis", () => {
  const schema = uniqueSchema("up_fleet");
  let redis: RedisServer;
  afterAll(async () => {
    await redis?.destroy();
    await dropSchema(schema);
  });

  it("serve the same queue: a build submitted through one completes and shows through the other", async () => {
    redis = await RedisServer.start({ appendonly: false });
    const token = "fleet-admin-token-0123456789";
    const env = {
      DATABASE_URL: TEST_DATABASE_URL,
      REDIS_URL: redis.url,
      OCULUS_SCHEMA: schema,
      OCULUS_PREFIX: `${schema}p`,
      OCULUS_TOKENS: `ops:admin:${token}`,
      OCULUS_CORS_ORIGINS: "https://app.example.com",
      OCULUS_TRUST_PROXY: "127.0.0.1",
    };
    const [a, b] = await Promise.all([
      startUp(["--workers", "1", "--demo", "--demo-step-ms", "10"], env),
      // With tokens, any address may be bound (it is still reached through loopback here).
      startUp(["--workers", "1", "--demo", "--demo-step-ms", "10", "--host", "0.0.0.0"], env),
    ]);
    let exitCodes: (number | null)[];
    try {
      const auth = { authorization: `Bearer ${token}` };
      await printed(a, /auth: 1 token\(s\) configured/);
      await printed(a, /^cors: https:\/\/app\.example\.com$/m);
      await printed(a, /^trusted proxies \(X-Forwarded-For\): 127\.0\.0\.1$/m);
      const preflight = await fetch(`${a.url}/v1/builds`, {
        method: "OPTIONS",
        headers: { origin: "https://app.example.com", "access-control-request-method": "POST" },
      });
      expect(preflight.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
      const port = new URL(b.url).port;
      const bUrl = `http://127.0.0.1:${port}`;
      expect((await fetch(`${bUrl}/v1/queue`)).status).toBe(401);
      const submitted = await json(
        await fetch(`${a.url}/v1/builds`, {
          method: "POST",
          headers: { ...auth, "content-type": "application/json" },
          body: JSON.stringify({ strategyId: "fleet", params: { stepMs: 10 } }),
        }),
      );
      expect(submitted.status).toBe(201);
      const id = submitted.body.build.id as string;
      await eventually(async () => {
        const res = await json(await fetch(`${bUrl}/v1/builds/${id}`, { headers: auth }));
        return res.body.build?.status === "completed";
      }, 30_000);
      const workers = await json(await fetch(`${bUrl}/v1/workers?status=active`, { headers: auth }));
      expect(workers.body.workers).toHaveLength(2);
      for (const url of [a.url, bUrl]) {
        const health = await eventually(async () => {
          const res = await json(await fetch(`${url}/health`));
          return res.body.persistence ? res.body : undefined;
        });
        // The test Redis runs without persistence: the checks say so, and the queue still runs.
        expect(health).toMatchObject({
          mode: "redis",
          redis: { status: "up" },
          persistence: { status: "fail" },
        });
      }
      await printed(a, /Redis persistence checks: fail/);
    } finally {
      exitCodes = await Promise.all([stopUp(a), stopUp(b)]);
    }
    expect(exitCodes).toEqual([0, 0]);
  });
});

describe("oculus up --retention-days", () => {
  const schema = uniqueSchema("up_retention");
  afterAll(() => dropSchema(schema));

  it("deletes builds that finished longer ago than that, at start and hourly; keeps the rest", async () => {
    const queue = await BuildQueue.open({ databaseUrl: TEST_DATABASE_URL, schema });
    let up: UpProcess | undefined;
    try {
      const [old, recent] = (await queue.submitMany([{ strategyId: "old" }, { strategyId: "recent" }])).map(
        (r) => r.build.id,
      ) as [string, string];
      await queue.stop(old, { actor: "test" });
      await queue.stop(recent, { actor: "test" });
      await queue.store.db.query("UPDATE builds SET finished_at = now() - interval '40 days' WHERE id = $1", [
        old,
      ]);
      up = await startUp(["--workers", "0", "--retention-days", "30"], {
        DATABASE_URL: TEST_DATABASE_URL,
        OCULUS_SCHEMA: schema,
      });
      await printed(up, /retention: finished builds are deleted 30 day\(s\) after they finish/);
      await eventually(async () => (await queue.get(old).catch(() => undefined)) === undefined);
      expect((await queue.get(recent)).status).toBe("stopped");
    } finally {
      if (up) await stopUp(up);
      await queue.close();
    }
  });
});

describe("oculus up token rotation (SIGHUP)", () => {
  const schema = uniqueSchema("up_sighup");
  const dir = mkdtempSync(path.join(tmpdir(), "oculus-tokens-"));
  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    await dropSchema(schema);
  });

  it("re-reads OCULUS_TOKENS_FILE; a broken file, or one that would open the API, changes nothing", async () => {
    const file = path.join(dir, "tokens.json");
    const tokens = (...list: { name: string; token: string }[]) =>
      writeFileSync(file, JSON.stringify({ tokens: list.map((t) => ({ ...t, scopes: ["read"] })) }));
    const oldToken = "old-token-0123456789abcdef";
    const newToken = "new-token-0123456789abcdef";
    tokens({ name: "old", token: oldToken });
    const up = await startUp(["--workers", "0", "--host", "0.0.0.0"], {
      DATABASE_URL: TEST_DATABASE_URL,
      OCULUS_SCHEMA: schema,
      OCULUS_TOKENS_FILE: file,
    });
    const url = `http://127.0.0.1:${new URL(up.url).port}`;
    const status = async (token: string) =>
      (await fetch(`${url}/v1/queue`, { headers: { authorization: `Bearer ${token}` } })).status;
    try {
      expect(await status(oldToken)).toBe(200);
      tokens({ name: "new", token: newToken });
      up.child.kill("SIGHUP");
      await eventually(async () => /tokens reloaded, 1 token/.test(up.output()));
      expect(await status(oldToken)).toBe(401);
      expect(await status(newToken)).toBe(200);

      writeFileSync(file, "{ not json");
      up.child.kill("SIGHUP");
      await eventually(async () => /reload refused.*cannot read/.test(up.output()));
      tokens();
      up.child.kill("SIGHUP");
      await eventually(async () => /reload refused.*beyond loopback/.test(up.output()));
      expect(await status(newToken)).toBe(200);
      expect((await fetch(`${url}/v1/queue`)).status).toBe(401);
    } finally {
      expect(await stopUp(up)).toBe(0);
    }
  });
});

describe("oculus up --require-persistence", () => {
  const schema = uniqueSchema("up_persist");
  const servers: RedisServer[] = [];
  afterAll(async () => {
    for (const server of servers) await server.destroy();
    await dropSchema(schema);
  });
  const env = (redisUrl: string) => ({
    DATABASE_URL: TEST_DATABASE_URL,
    REDIS_URL: redisUrl,
    OCULUS_SCHEMA: schema,
    OCULUS_PREFIX: `${schema}p`,
  });

  it("refuses to start on a Redis without AOF (exit 2, naming the setting), and starts on one with it", async () => {
    const bare = await RedisServer.start({ appendonly: false });
    servers.push(bare);
    const refused = spawnOculus(
      ["up", "--port", "0", "--workers", "0", "--require-persistence"],
      env(bare.url),
    );
    expect(await refused.exited).toBe(2);
    const out = refused.output();
    expect(out).toMatch(/--require-persistence: Redis persistence checks fail/);
    expect(out).toMatch(/appendonly/);
    expect(out).not.toMatch(/API listening/);

    const durable = await RedisServer.start({ appendfsync: "everysec" });
    servers.push(durable);
    const up = await startUp(["--workers", "0", "--require-persistence"], env(durable.url));
    await printed(up, /Redis persistence checks: (pass|warn)/);
    expect(await stopUp(up)).toBe(0);
  });
});
