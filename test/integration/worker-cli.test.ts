/**
 * `oculus worker --command ...` as an operator runs it: the built binary, a real shell command per
 * build, real PostgreSQL and Redis.
 */
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import { TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const BIN = path.resolve("dist/src/cli/main.js");
const SCRIPT = [
  'echo "starting $OCULUS_STRATEGY_ID"',
  'echo "::progress {\\"phase\\":\\"training\\",\\"percent\\":50,\\"iteration\\":1,\\"maxIterations\\":2}"',
  'case "$OCULUS_BUILD_PARAMS" in *fail*) echo "loss is NaN" >&2; exit 3;; esac',
  'echo "::result {\\"image\\":\\"oculus/$OCULUS_STRATEGY_ID:1\\"}"',
].join("\n");

describe("oculus worker --command", () => {
  let redis: RedisServer;
  let queue: BuildQueue;
  let schema: string;
  let prefix: string;
  let cleanup: () => Promise<void>;
  let worker: ChildProcess;
  let output = "";

  beforeAll(async () => {
    redis = await RedisServer.start({ appendonly: false });
    ({ queue, schema, prefix, cleanup } = await openTestQueue("worker_cli", { redisUrl: redis.url }));
    worker = spawn(
      "node",
      [
        BIN,
        "worker",
        "--command",
        SCRIPT,
        "--capacity",
        "2",
        "--label",
        "gpu=none",
        "--heartbeat-ms",
        "200",
        "--dead-after-ms",
        "2000",
      ],
      {
        env: {
          PATH: process.env.PATH ?? "",
          DATABASE_URL: TEST_DATABASE_URL,
          REDIS_URL: redis.url,
          OCULUS_SCHEMA: schema,
          OCULUS_PREFIX: prefix,
          OCULUS_LOG_LEVEL: "warn",
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    worker.stdout?.on("data", (d: Buffer) => {
      output += d.toString();
    });
    worker.stderr?.on("data", (d: Buffer) => {
      output += d.toString();
    });
  });
  afterAll(async () => {
    if (worker.exitCode === null) worker.kill("SIGKILL");
    await cleanup?.();
    await redis?.destroy();
  });

  it("runs each build's command: progress, result and log tail recorded", async () => {
    const { build } = await queue.submit({ strategyId: "momentum", params: { lr: 0.1 } });
    const done = await eventually(async () => {
      const b = await queue.get(build.id);
      return b.status === "completed" && b;
    }, 30_000);
    expect(done.result).toEqual({ image: "oculus/momentum:1" });
    expect(done.progress).toMatchObject({ phase: "training", percent: 50, iteration: 1, maxIterations: 2 });
    expect(done.logTail).toContain("starting momentum");
  });

  it("fails a build whose command exits non-zero, with the exit code and the output", async () => {
    const { build } = await queue.submit({
      strategyId: "diverging",
      params: { mode: "fail" },
      maxRetries: 0,
    });
    const failed = await eventually(async () => {
      const b = await queue.get(build.id);
      return b.status === "failed" && b;
    }, 30_000);
    expect(failed.lastError).toMatch(/exit code 3/);
    expect(failed.lastError).toContain("loss is NaN");
    expect(failed.logTail).toContain("loss is NaN");
  });

  it("shows in the fleet with its capacity and labels, and stops gracefully on SIGTERM", async () => {
    const [listed] = await queue.workers.list();
    expect(listed).toMatchObject({ capacity: 2, labels: { gpu: "none" }, status: "active" });
    const exited = new Promise<number | null>((resolve) => worker.once("exit", (code) => resolve(code)));
    worker.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect((await queue.workers.list())[0]?.status).toBe("stopped");
    expect(output).toMatch(/worker .* running \(capacity 2/);
  });
});
