/**
 * `oculus worker --command ...` as an operator runs it: the built binary, a real shell command per
 * build, real PostgreSQL and Redis.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
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

  it("runs builds whose requires its --label pairs include, and never others", async () => {
    const { build: theirs } = await queue.submit({ strategyId: "needs-a100", requires: { gpu: "a100" } });
    const { build: ours } = await queue.submit({ strategyId: "needs-none", requires: { gpu: "none" } });
    await eventually(async () => (await queue.get(ours.id)).status === "completed", 30_000);
    expect((await queue.get(theirs.id)).status).toBe("queued");
    await queue.remove(theirs.id);
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

describe("oculus worker shutdown with a command that ignores SIGTERM", () => {
  it("hands the build back after the drain, and kills the whole process group after the grace", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "oculus-stubborn-"));
    const opened = await openTestQueue("worker_cli_stubborn");
    const stubborn = `echo $$ > ${dir}/pgid; trap '' TERM; sleep 60 & sleep 60 & wait`;
    const child = spawnWorker(opened.schema, [
      "--command",
      stubborn,
      "--drain-ms",
      "300",
      "--grace-ms",
      "500",
      "--heartbeat-ms",
      "200",
      "--dead-after-ms",
      "5000",
    ]);
    try {
      const { build } = await opened.queue.submit({ strategyId: "stubborn" });
      await eventually(
        async () => existsSync(`${dir}/pgid`) && (await opened.queue.get(build.id)).status === "running",
      );
      const pgid = Number(readFileSync(`${dir}/pgid`, "utf8"));
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
      // Handed back (not a failure: no retry counted), and nothing of the command is left.
      expect(await opened.queue.get(build.id)).toMatchObject({ status: "queued", retryCount: 0 });
      expect(liveProcessesInGroup(pgid)).toEqual([]);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
      await opened.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** Processes of a process group that are not zombies (a zombie has ended; only its parent's wait is due). */
function liveProcessesInGroup(pgid: number): number[] {
  const live: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[2]) === pgid && fields[0] !== "Z") live.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return live;
}

describe("oculus worker killed with SIGKILL while a build command runs", () => {
  it("does not leave the build command running: the watchdog ends its process group", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "oculus-orphan-"));
    const opened = await openTestQueue("worker_cli_orphan");
    const child = spawnWorker(opened.schema, [
      "--command",
      `echo $$ > ${dir}/pgid; sleep 60 & wait`,
      "--grace-ms",
      "500",
    ]);
    try {
      await opened.queue.submit({ strategyId: "orphan" });
      const pgid = await commandGroup(dir);
      expect(liveProcessesInGroup(pgid).length).toBeGreaterThan(0);
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
      await eventually(async () => liveProcessesInGroup(pgid).length === 0, 20_000);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
      await opened.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("stopping a build that runs as a command in another process", () => {
  it("SIGTERMs the command's group, records the stop, and leaves nothing running", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "oculus-stop-"));
    const opened = await openTestQueue("worker_cli_stop");
    const command = `echo $$ > ${dir}/pgid; trap 'echo "got TERM"; exit 0' TERM; sleep 60 & wait`;
    const child = spawnWorker(opened.schema, ["--command", command, "--grace-ms", "2000"]);
    try {
      const { build } = await opened.queue.submit({ strategyId: "to-stop" });
      const pgid = await commandGroup(dir);
      await opened.queue.stop(build.id, { actor: "dave", reason: "not needed" });
      const stopped = await eventually(async () => {
        const b = await opened.queue.get(build.id);
        return b.status === "stopped" && b;
      }, 20_000);
      expect(stopped).toMatchObject({ stoppedBy: "dave", stopReason: "not needed", retryCount: 0 });
      expect(stopped.logTail).toContain("got TERM");
      await eventually(async () => liveProcessesInGroup(pgid).length === 0, 20_000);
    } finally {
      child.kill("SIGKILL");
      await opened.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** `oculus worker ARGS` on the test PostgreSQL in `schema`, without Redis, output ignored. */
function spawnWorker(schema: string, args: string[]): ChildProcess {
  return spawn("node", [BIN, "worker", ...args], {
    env: {
      PATH: process.env.PATH ?? "",
      DATABASE_URL: TEST_DATABASE_URL,
      OCULUS_SCHEMA: schema,
      OCULUS_LOG_LEVEL: "warn",
    },
    stdio: "ignore",
  });
}

/** The process group of the build command that wrote `echo $$ > DIR/pgid`, once it has. */
async function commandGroup(dir: string): Promise<number> {
  await eventually(
    async () => existsSync(`${dir}/pgid`) && readFileSync(`${dir}/pgid`, "utf8").trim() !== "",
  );
  return Number(readFileSync(`${dir}/pgid`, "utf8"));
}
