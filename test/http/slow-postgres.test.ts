/**
 * Every route answers when PostgreSQL is slow: with the record behind a black hole (a TCP proxy that
 * stops delivering without closing anything: the worst kind of slow) and with its tables locked by
 * another transaction (a real server that does not answer in time), each route of the running server
 * (recorded as Fastify registers them, so a new route is covered too) answers within the configured
 * query timeout plus a generous margin: with its data, or 503 with Retry-After and `error.reason`
 * (/health: its own 503 body). Never a 500, never a hang. Then the API recovers by itself. Both with
 * PostgreSQL alone and with a private Redis (whose fast path answers some reads itself).
 *
 * It asserts that an answer comes, not how fast: the bound is several times the timeouts.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { STORE_UNAVAILABLE_REASONS } from "../../src/core/errors.js";
import { openTestApi, type RecordedRoute, routeRecorder, type TestApi } from "../helpers/api.js";
import { TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

const STATEMENT_TIMEOUT_MS = 1000;
const QUERY_TIMEOUT_MS = 2000;
const CONNECT_TIMEOUT_MS = 1000;
/** Timeouts plus a wide margin for a busy machine (pool waits, several statements per route). */
const ANSWER_BOUND_MS = QUERY_TIMEOUT_MS + CONNECT_TIMEOUT_MS + 20_000;

let recorder: ReturnType<typeof routeRecorder>;
let proxy: TcpProxy;
let redis: RedisServer | undefined;
let api: TestApi;
let base: string;
let queuedId: string;

/** A server whose queue reaches PostgreSQL through a TCP proxy, with or without a private Redis. */
async function start(withRedis: boolean): Promise<void> {
  recorder = routeRecorder();
  const url = new URL(TEST_DATABASE_URL);
  proxy = await TcpProxy.start(Number(url.port || 5432), url.hostname);
  url.host = `127.0.0.1:${proxy.port}`;
  redis = withRedis ? await RedisServer.start({ appendonly: false }) : undefined;
  api = await openTestApi("http_slow_pg", {
    setup: recorder.setup,
    queue: {
      databaseUrl: url.toString(),
      ...(redis ? { redisUrl: redis.url } : {}),
      pgStatementTimeoutMs: STATEMENT_TIMEOUT_MS,
      pgQueryTimeoutMs: QUERY_TIMEOUT_MS,
      pgConnectTimeoutMs: CONNECT_TIMEOUT_MS,
    },
  });
  if (withRedis) await eventually(async () => api.queue.mode === "redis");
  base = await api.url();
  queuedId = (await api.queue.submit({ strategyId: "slow-pg" })).build.id;
}

async function stop(): Promise<void> {
  proxy?.heal();
  proxy?.restore();
  await api?.cleanup();
  await proxy?.close();
  await redis?.destroy();
}

/** A plausible request for the route: an existing build for `:id`, a valid body where one is taken. */
function requestOf(route: RecordedRoute): { path: string; init: RequestInit } {
  const path = route.url.replace(":id", queuedId).replace("*", "index.html");
  const submit = route.method === "POST" && route.url === "/v1/builds";
  const body = submit
    ? JSON.stringify({ strategyId: "slow-pg-submit" })
    : route.method === "POST"
      ? "{}"
      : undefined;
  const headers: Record<string, string> = body === undefined ? {} : { "content-type": "application/json" };
  return { path, init: { method: route.method, headers, body, redirect: "manual" } };
}

interface Outcome {
  route: string;
  status: number | "no answer";
  ms: number;
  retryAfter: string | null;
  // biome-ignore lint/suspicious/noExplicitAny: a JSON body of any route
  json: any;
}

async function askEveryRoute(): Promise<Outcome[]> {
  const routes = recorder.routes();
  return Promise.all(
    routes.map(async (route): Promise<Outcome> => {
      const { path, init } = requestOf(route);
      const name = `${route.method} ${route.url}`;
      const started = performance.now();
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), ANSWER_BOUND_MS);
      try {
        const res = await fetch(`${base}${path}`, { ...init, signal: controller.signal });
        const ms = Math.round(performance.now() - started);
        const type = res.headers.get("content-type") ?? "";
        let json: unknown;
        if (type.startsWith("text/event-stream")) await res.body?.cancel();
        else json = type.startsWith("application/json") ? await res.json().catch(() => undefined) : undefined;
        return { route: name, status: res.status, ms, retryAfter: res.headers.get("retry-after"), json };
      } catch {
        return {
          route: name,
          status: "no answer",
          ms: Math.round(performance.now() - started),
          retryAfter: null,
          json: null,
        };
      } finally {
        clearTimeout(timer);
      }
    }),
  );
}

function expectAnswers(outcomes: Outcome[]): void {
  const table = JSON.stringify(
    outcomes.map(({ route, status, ms, json }) => ({ route, status, ms, code: json?.error?.code })),
  );
  for (const outcome of outcomes) {
    const label = `${outcome.route}: ${outcome.status} in ${outcome.ms} ms ${JSON.stringify(outcome.json)?.slice(0, 300)} (all: ${table})`;
    expect(outcome.status, label).not.toBe("no answer");
    const status = outcome.status as number;
    if (status < 500) continue;
    expect(status, label).toBe(503);
    if (outcome.route.endsWith(" /health")) {
      if (outcome.route.startsWith("GET")) expect(outcome.json?.status, label).toBe("unavailable");
      continue;
    }
    expect(Number(outcome.retryAfter), label).toBeGreaterThanOrEqual(1);
    if (outcome.route.startsWith("HEAD")) continue; // no body
    expect(outcome.json?.error?.code, label).toBe("store_unavailable");
    expect(STORE_UNAVAILABLE_REASONS, label).toContain(outcome.json?.error?.reason);
  }
  // The fault was in force: a read of the record could not be served.
  expect(outcomes.find((o) => o.route === "GET /v1/builds/:id")?.status, table).toBe(503);
}

async function recovered(): Promise<void> {
  await eventually(async () => {
    const res = await api.fetch("GET", "/health");
    return res.status === 200 && res.json.postgres.status === "up";
  }, 60_000);
  expect((await api.fetch("GET", `/v1/builds/${queuedId}`)).status).toBe(200);
}

describe.each([
  ["PostgreSQL only", false],
  ["with Redis", true],
])("every route answers within its timeout when PostgreSQL is slow (%s)", (_name, withRedis) => {
  beforeAll(() => start(withRedis), 60_000);
  afterAll(stop);

  it("PostgreSQL behind a black hole (nothing delivered, nothing closed)", async () => {
    const before = await askEveryRoute();
    expect(
      before.every((o) => typeof o.status === "number" && o.status < 500),
      JSON.stringify(before),
    ).toBe(true);
    proxy.blackhole();
    try {
      expectAnswers(await askEveryRoute());
    } finally {
      proxy.heal();
    }
    await recovered();
  }, 120_000);

  it("PostgreSQL's tables locked by another transaction (statements wait until their timeout)", async () => {
    const { rows } = await api.queue.store.db.query<{ schema: string }>("SELECT current_schema() AS schema");
    const holder = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await holder.connect();
    try {
      await holder.query(`SET search_path TO "${rows[0]?.schema}"`);
      await holder.query("BEGIN");
      await holder.query("LOCK TABLE builds, build_events, build_listing, workers IN ACCESS EXCLUSIVE MODE");
      expectAnswers(await askEveryRoute());
      await holder.query("ROLLBACK");
    } finally {
      await holder.end();
    }
    await recovered();
  }, 120_000);
});
