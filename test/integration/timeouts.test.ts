/**
 * Build timeouts (issue 14), in both modes: `timeoutSeconds` on submit, and a worker's default
 * (`buildTimeoutSeconds`, `oculus worker --build-timeout`). Past it the command gets SIGTERM, then
 * SIGKILL after the grace period; the build fails with an error saying it timed out, and is retried
 * like any failure. A build that ends in time is not touched.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BuildQueue, commandHandler, Worker } from "../../src/index.js";
import { sql } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

describe.each(["redis", "postgres"] as const)("build timeouts (%s mode)", (mode) => {
  let redis: RedisServer | undefined;
  let queue: BuildQueue;
  let schema: string;
  let cleanup: () => Promise<void>;
  const workers: Worker[] = [];

  beforeAll(async () => {
    redis = mode === "redis" ? await RedisServer.start({ appendonly: false }) : undefined;
    ({ queue, schema, cleanup } = await openTestQueue(`timeouts_${mode}`, { redisUrl: redis?.url }));
    await eventually(async () => queue.mode === mode);
  });
  afterAll(async () => {
    for (const w of workers) await w.stop();
    await cleanup?.();
    await redis?.destroy();
  });

  async function finished(id: string) {
    return eventually(async () => {
      const build = await queue.get(id);
      return build.status === "failed" || build.status === "completed" ? build : undefined;
    }, 60_000);
  }

  it("a build past its timeoutSeconds gets SIGTERM, fails saying it timed out, and is retried", async () => {
    const worker = new Worker(queue, {
      labels: { kind: "term" },
      handler: commandHandler("exec sleep 30", { graceMs: 5000 }),
    });
    workers.push(worker);
    await worker.start();
    const { build } = await queue.submit({
      strategyId: "slow",
      timeoutSeconds: 1,
      maxRetries: 1,
      requires: { kind: "term" },
    });
    expect(build.timeoutSeconds).toBe(1);
    const done = await finished(build.id);
    expect(done.status).toBe("failed");
    expect(done.retryCount).toBe(1);
    expect(done.lastError).toContain("timed out");
    expect(done.lastError).toContain("timeout of 1 s");
    expect(done.lastError).toContain("SIGTERM");
    const events = await sql<{ type: string }>(
      schema,
      "SELECT type FROM build_events WHERE build_id = $1 AND type <> 'progress' ORDER BY id",
      [build.id],
    );
    expect(events.map((e) => e.type).filter((t) => t === "claimed")).toHaveLength(2);
  });

  it("the worker's default timeout applies to builds without one; SIGKILL after the grace period", async () => {
    const worker = new Worker(queue, {
      labels: { kind: "kill" },
      buildTimeoutSeconds: 1,
      // Ignores SIGTERM (an ignored signal stays ignored across exec): only SIGKILL ends it.
      handler: commandHandler("trap '' TERM; exec sleep 30", { graceMs: 300 }),
    });
    workers.push(worker);
    await worker.start();
    const { build } = await queue.submit({
      strategyId: "stubborn",
      maxRetries: 0,
      requires: { kind: "kill" },
    });
    expect(build.timeoutSeconds).toBeNull();
    const done = await finished(build.id);
    expect(done.status).toBe("failed");
    expect(done.lastError).toContain("timed out");
    expect(done.lastError).toContain("SIGKILL");
  });

  it("a build that ends within its timeout completes", async () => {
    const worker = new Worker(queue, {
      labels: { kind: "quick" },
      buildTimeoutSeconds: 1,
      handler: commandHandler("echo '::result {\"ok\":true}'"),
    });
    workers.push(worker);
    await worker.start();
    const { build } = await queue.submit({
      strategyId: "quick",
      timeoutSeconds: 30,
      requires: { kind: "quick" },
    });
    const done = await finished(build.id);
    expect(done).toMatchObject({ status: "completed", result: { ok: true } });
  });

  it("refuses a bad timeoutSeconds, naming the field", async () => {
    for (const timeoutSeconds of [0, 1.5, -1, "10", 10_000_000]) {
      await expect(queue.submit({ strategyId: "x", timeoutSeconds } as never)).rejects.toThrow(
        /timeoutSeconds/,
      );
    }
    expect(() => new Worker(queue, { handler: async () => 1, buildTimeoutSeconds: 0 })).toThrow(
      /buildTimeoutSeconds/,
    );
  });
});
