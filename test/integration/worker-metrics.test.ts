/**
 * A worker's own /metrics and /health (`oculus worker --metrics-port`): its runs by outcome, its
 * running builds and capacity, its claims, its heartbeat; /health turns 503 once the heartbeat is
 * older than the dead-worker timeout.
 */

import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import {
  serveWorkerMetrics,
  WORKER_METRICS_LIMITS,
  type WorkerMetricsServer,
} from "../../src/worker/metrics-server.js";
import { Worker } from "../../src/worker/worker.js";
import { oculus, spawnOculus } from "../helpers/oculus-cli.js";
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";

describe("a worker's metrics endpoint", () => {
  let queue: BuildQueue;
  let cleanup: () => Promise<void>;
  let worker: Worker;
  let server: WorkerMetricsServer;

  beforeAll(async () => {
    ({ queue, cleanup } = await openTestQueue("worker_metrics", {
      health: { heartbeatMs: 100, deadAfterMs: 400 },
    }));
    worker = new Worker(queue, {
      id: "metrics-worker",
      capacity: 2,
      handler: async ({ build, signal }) => {
        if (build.strategyId === "bad") throw new Error("broken");
        if (build.strategyId === "slow") {
          await new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
        }
        return { ok: true };
      },
    });
    await worker.start();
    server = await serveWorkerMetrics(worker, queue, { host: "127.0.0.1", port: 0 });
  });
  afterAll(async () => {
    await server?.close();
    await worker?.stop();
    await cleanup?.();
  });

  const scrape = async () => (await fetch(`${server.url}/metrics`)).text();
  const sample = (text: string, name: string, label = "") =>
    Number(new RegExp(`^${name}\\{[^}]*${label}[^}]*\\} (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);

  it("counts runs by outcome, and shows running builds, capacity, claims and the heartbeat", async () => {
    const [ok, bad, slow] = (
      await queue.submitMany([
        { strategyId: "ok" },
        { strategyId: "bad", maxRetries: 0 },
        { strategyId: "slow" },
      ])
    ).map((r) => r.build.id) as [string, string, string];
    await eventually(async () => (await queue.get(slow)).status === "running");
    await eventually(async () => (await queue.get(ok)).status === "completed");
    await eventually(async () => (await queue.get(bad)).status === "failed");
    let text = await scrape();
    expect(sample(text, "oculus_worker_builds_running")).toBe(1);
    expect(sample(text, "oculus_worker_capacity")).toBe(2);
    expect(sample(text, "oculus_worker_builds_ended_total", 'outcome="completed"')).toBe(1);
    expect(sample(text, "oculus_worker_builds_ended_total", 'outcome="failed"')).toBe(1);
    expect(sample(text, "oculus_worker_claim_duration_seconds_count")).toBeGreaterThanOrEqual(1);
    expect(sample(text, "oculus_worker_queue_mode", 'mode="postgres"')).toBe(1);
    expect(text).toMatch(/worker="metrics-worker"/);
    await eventually(async () => sample(await scrape(), "oculus_worker_heartbeat_age_seconds") >= 0);

    await queue.stop(slow, { actor: "test", reason: "metrics" });
    await eventually(async () => (await queue.get(slow)).status === "stopped");
    text = await scrape();
    expect(sample(text, "oculus_worker_builds_ended_total", 'outcome="stopped"')).toBe(1);
    expect(sample(text, "oculus_worker_builds_running")).toBe(0);
  });

  it("answers /health while it heartbeats, and 404 / 405 for anything else", async () => {
    const health = await fetch(`${server.url}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: "ok", workerId: "metrics-worker", capacity: 2 });
    expect((await fetch(`${server.url}/nope`)).status).toBe(404);
    expect((await fetch(`${server.url}/metrics`, { method: "POST" })).status).toBe(405);
  });

  it("cuts off a client that sends its request too slowly (408), and connections past the cap", async () => {
    const limited = await serveWorkerMetrics(worker, queue, {
      host: "127.0.0.1",
      port: 0,
      limits: { ...WORKER_METRICS_LIMITS, requestTimeoutMs: 1000, headersTimeoutMs: 1000, maxConnections: 2 },
    });
    const { port } = new URL(limited.url);
    try {
      // Slowloris: headers begun, never finished.
      const slow = await openSocket(Number(port));
      slow.socket.write("GET /metrics HTTP/1.1\r\nHost: x\r\n");
      await slow.closed;
      expect(slow.received()).toMatch(/^HTTP\/1\.1 408/);
      // Two idle connections take the cap; a third is closed at once, unanswered; after they go, a
      // scrape works again.
      const held = [await openSocket(Number(port)), await openSocket(Number(port))];
      const third = await openSocket(Number(port));
      third.socket.write("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
      await third.closed;
      expect(third.received()).toBe("");
      for (const h of held) h.socket.destroy();
      await eventually(
        async () => (await fetch(`${limited.url}/health`).catch(() => undefined))?.status === 200,
      );
    } finally {
      await limited.close();
    }
  });

  it("/health is 503 once the heartbeat is older than the dead-worker timeout", async () => {
    await worker.stop(); // heartbeats stop with it
    await eventually(async () => (await fetch(`${server.url}/health`)).status === 503, 10_000);
    expect(await (await fetch(`${server.url}/health`)).json()).toMatchObject({ status: "stale" });
  });
});

describe("oculus worker --metrics-port", () => {
  const schema = uniqueSchema("worker_metrics_cli");
  afterAll(() => dropSchema(schema));

  it("prints where it serves its metrics, serves them, and exits 0 on SIGTERM", async () => {
    const worker = spawnOculus(["worker", "--metrics-port", "0", "--id", "cli-m"], {
      DATABASE_URL: TEST_DATABASE_URL,
      OCULUS_SCHEMA: schema,
    });
    try {
      const url = await eventually(
        async () => /metrics on (http:\/\/\S+)\/metrics/.exec(worker.output())?.[1],
        30_000,
      );
      const text = await (await fetch(`${url}/metrics`)).text();
      expect(text).toMatch(/^oculus_worker_capacity\{worker="cli-m"\} 1$/m);
      expect((await fetch(`${url}/health`)).status).toBe(200);
    } finally {
      worker.child.kill("SIGTERM");
    }
    expect(await worker.exited).toBe(0);
  });

  it("refuses a port in use before it claims anything (exit 2, naming the flag)", async () => {
    const { createServer } = await import("node:net");
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as { port: number }).port;
    try {
      const res = await oculus(["worker", "--metrics-port", String(port)], {
        DATABASE_URL: TEST_DATABASE_URL,
        OCULUS_SCHEMA: schema,
      });
      expect(res.code).toBe(2);
      expect(res.stderr).toMatch(/is in use: pick another --metrics-port/);
      expect(res.stdout).not.toMatch(/running/);
    } finally {
      taken.close();
    }
  });

  it("refuses a bad port, naming the flag", async () => {
    const res = await oculus(["worker", "--metrics-port", "99999"], { DATABASE_URL: "postgres://nowhere/x" });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/--metrics-port/);
  });
});

/** A raw connection: what it received, and a promise of its closing. */
async function openSocket(
  port: number,
): Promise<{ socket: Socket; closed: Promise<void>; received(): string }> {
  const socket = connect(port, "127.0.0.1");
  let data = "";
  socket.on("data", (chunk) => (data += chunk.toString()));
  socket.on("error", () => undefined);
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  return { socket, closed, received: () => data };
}
