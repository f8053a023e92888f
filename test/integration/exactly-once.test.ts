/**
 * Exactly once across processes: several claimer processes (test/helpers/claimer-process.ts) claim
 * and complete a few thousand builds while this process submits them. Every build must be claimed
 * exactly once and completed, with the claim's lease, on the Redis path, on the PostgreSQL path, and
 * across a Redis kill -9 in the middle (processes fall back to PostgreSQL) and its restart (back to
 * Redis, with an AOF that replays some already-claimed ids). Checked from what the processes saw and
 * from PostgreSQL (one 'claimed' and one 'completed' event per build).
 */
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import { ClaimerProcess } from "../helpers/claimers.js";
import { sql } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const BUILDS = 3000;
const CHUNK = 100;
const CLAIMERS = 4;

type Scenario = "redis" | "postgres" | "switch";

const cleanups: (() => Promise<void>)[] = [];

afterAll(async () => {
  // Last registered, first cleaned: claimers, then queues, then servers.
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

async function completedCount(schema: string): Promise<number> {
  const [row] = await sql<{ n: number }>(
    schema,
    "SELECT count(*)::int AS n FROM builds WHERE status = 'completed'",
  );
  return row?.n ?? 0;
}

async function runScenario(scenario: Scenario): Promise<void> {
  const server = scenario === "postgres" ? undefined : await RedisServer.start();
  if (server) cleanups.push(() => server.destroy());
  const { queue, schema, prefix, cleanup } = await openTestQueue(
    `exactly_once_${scenario}`,
    server ? { redisUrl: server.url } : {},
  );
  cleanups.push(cleanup);
  expect(queue.mode).toBe(server ? "redis" : "postgres");

  const claimers = Array.from({ length: CLAIMERS }, (_, i) =>
    ClaimerProcess.start({ workerId: `w${i}`, schema, prefix, redisUrl: server?.url }),
  );
  const killClaimers = async () => {
    await Promise.all(claimers.map((c) => c.kill()));
  };
  // Gone at the end of this test even if it failed (and again in afterAll, in case).
  onTestFinished(killClaimers);
  cleanups.push(killClaimers);
  const describeClaimers = () => claimers.map((c) => c.describe()).join("\n---\n");
  await eventually(async () => claimers.every((c) => c.ready), 45_000).catch((err) => {
    throw new Error(`claimers did not start: ${(err as Error).message}\n${describeClaimers()}`);
  });
  const expectedStartMode = server ? "redis" : "postgres";
  expect(claimers.map((c) => c.mode)).toEqual(claimers.map(() => expectedStartMode));

  const allModes = (q: BuildQueue, mode: string) => async () =>
    q.mode === mode && claimers.every((c) => c.mode === mode);

  const submitted = new Set<string>();
  const submitErrors: unknown[] = [];
  for (let chunk = 0; chunk < BUILDS / CHUNK; chunk++) {
    if (server && scenario === "switch") {
      if (chunk === 10) {
        // In the middle of claims: no shutdown, no final fsync. Then a stretch on PostgreSQL only.
        await server.kill9();
        await eventually(allModes(queue, "postgres"), 20_000);
      }
      // Back, and without waiting for the processes to recover, down again (a clean stop this time)
      // and back for good: submits and claims run through every transition.
      if (chunk === 17) await server.restart();
      if (chunk === 22) await server.stop();
      if (chunk === 25) await server.restart();
    }
    const inputs = Array.from({ length: CHUNK }, (_, i) => ({
      strategyId: `s${chunk}`,
      priority: ((chunk * CHUNK + i) % 7) - 3,
      params: { chunk, i },
    }));
    try {
      for (const r of await queue.submitMany(inputs)) {
        expect(r.created).toBe(true);
        submitted.add(r.build.id);
      }
    } catch (err) {
      submitErrors.push(err);
    }
    await new Promise((r) => setTimeout(r, 15));
  }
  expect(submitErrors).toEqual([]);
  expect(submitted.size).toBe(BUILDS);
  if (scenario === "switch") {
    // Each of the six processes reconciles the index in turn on its way back (one walk at a time
    // across processes), after a probe backoff of up to 5 s: under a full suite that took over 20 s
    // once. What this test checks is exactly once, not how fast the way back is.
    await eventually(allModes(queue, "redis"), 45_000).catch((err) => {
      const modes = claimers.map((c) => `${c.workerId} ${c.mode}`).join(", ");
      throw new Error(
        `not all back in Redis mode: submitter ${queue.mode}, ${modes} (${(err as Error).message})\n${describeClaimers()}`,
      );
    });
  }

  await eventually(async () => (await completedCount(schema)) === BUILDS, 45_000).catch(async (err) => {
    const rows = await sql(schema, "SELECT status, count(*)::int AS n FROM builds GROUP BY status");
    throw new Error(
      `not all builds completed: ${JSON.stringify(rows)} (${(err as Error).message})\n${describeClaimers()}`,
    );
  });
  const exitCodes = await Promise.all(claimers.map((c) => c.stop()));
  expect(exitCodes, describeClaimers()).toEqual(claimers.map(() => 0));

  // What the processes saw: no caller-visible error, every build claimed by exactly one of them.
  expect(claimers.flatMap((c) => c.errors())).toEqual([]);
  const claims = new Map<string, { worker: string; lease: number; mode: string }[]>();
  for (const c of claimers) {
    for (const claim of c.claims()) {
      const list = claims.get(claim.id) ?? [];
      list.push({ worker: c.workerId, lease: claim.lease, mode: claim.mode });
      claims.set(claim.id, list);
    }
  }
  const duplicated = [...claims].filter(([, list]) => list.length !== 1);
  expect(duplicated).toEqual([]);
  expect(new Set(claims.keys())).toEqual(submitted);
  const completedSeen = claimers.flatMap((c) => c.events.filter((e) => e.type === "completed"));
  expect(completedSeen.length).toBe(BUILDS);

  const byMode = { redis: 0, postgres: 0 };
  for (const [first] of claims.values()) {
    if (first) byMode[first.mode as "redis" | "postgres"] += 1;
  }
  // On Redis alone, every claim went through the index (unless a process saw Redis fail, e.g. a
  // command timeout on an overloaded machine: then it announced a mode switch).
  const switched = claimers.some((c) => c.events.some((e) => e.type === "mode"));
  if (scenario === "redis" && !switched) expect(byMode.redis).toBe(BUILDS);
  if (scenario === "postgres") expect(byMode.postgres).toBe(BUILDS);
  if (scenario === "switch") {
    // Claims ran on both paths: before the kill and after the restart on Redis, in between on PostgreSQL.
    expect(byMode.redis).toBeGreaterThan(0);
    expect(byMode.postgres).toBeGreaterThan(0);
    for (const c of claimers) {
      const modes = c.events.filter((e) => e.type === "mode").map((e) => (e as { mode: string }).mode);
      expect(modes).toContain("postgres");
      expect(modes.at(-1)).toBe("redis");
    }
  }

  // The record agrees: completed, claimed once (one event), with the lease and worker the process had.
  const rows = await sql<{
    id: string;
    status: string;
    lease: number;
    worker_id: string;
    result: { worker: string };
    claimed_events: number;
    completed_events: number;
  }>(
    schema,
    `SELECT b.id, b.status, b.lease::int AS lease, b.worker_id, b.result,
            count(*) FILTER (WHERE e.type = 'claimed')::int AS claimed_events,
            count(*) FILTER (WHERE e.type = 'completed')::int AS completed_events
     FROM builds b JOIN build_events e ON e.build_id = b.id
     GROUP BY b.id`,
  );
  expect(rows.length).toBe(BUILDS);
  const wrong = rows.filter((row) => {
    const claim = claims.get(row.id)?.[0];
    return (
      row.status !== "completed" ||
      row.claimed_events !== 1 ||
      row.completed_events !== 1 ||
      row.lease !== 1 ||
      !claim ||
      claim.lease !== row.lease ||
      claim.worker !== row.worker_id ||
      row.result.worker !== claim.worker
    );
  });
  expect(wrong).toEqual([]);

  if (server) {
    // Nothing is queued, so the index must end empty (stale ids replayed by the AOF were dropped).
    const client = server.client();
    try {
      await eventually(async () => {
        const [ready, delayed] = await Promise.all([
          client.zcard(`${prefix}:build_queue`),
          client.zcard(`${prefix}:build_delayed`),
        ]);
        return ready === 0 && delayed === 0;
      }, 15_000);
    } finally {
      client.disconnect();
    }
  }
}

describe("exactly once across claimer processes", () => {
  it("Redis mode: every build claimed exactly once and completed", async () => {
    await runScenario("redis");
  }, 120_000);

  it("PostgreSQL-only mode (no Redis): every build claimed exactly once and completed", async () => {
    await runScenario("postgres");
  }, 120_000);

  it("across a mode switch (Redis kill -9 in the middle, restart later): exactly once", async () => {
    await runScenario("switch");
  }, 180_000);
});
