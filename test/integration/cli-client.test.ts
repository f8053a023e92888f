/**
 * The CLI client commands (the built binary, as a user runs it) against a real API server and a
 * worker: submit, status, queue, workers, watch (exit 0 only if the build completed), stop with a
 * reason, retry; and their errors: unknown build, bad input, no token, API unreachable.
 */
import { execFile, spawn } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Worker } from "../../src/worker/worker.js";
import { openTestApi, type TestApi } from "../helpers/api.js";
import { eventually } from "../helpers/queue.js";

const run = promisify(execFile);
const BIN = path.resolve("dist/src/cli/main.js");
const ADMIN = "cli-admin-token-0123456789";

describe("oculus client commands", () => {
  let api: TestApi;
  let worker: Worker;
  let url: string;

  async function oculus(args: string[], env: Record<string, string> = {}) {
    try {
      const { stdout, stderr } = await run("node", [BIN, ...args], {
        env: { PATH: process.env.PATH ?? "", OCULUS_URL: url, OCULUS_TOKEN: ADMIN, ...env },
        timeout: 60_000,
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  }

  /** `oculus watch` as a child whose output can be read while it runs. */
  function watch(id: string) {
    const child = spawn("node", [BIN, "watch", id], {
      env: { PATH: process.env.PATH ?? "", OCULUS_URL: url, OCULUS_TOKEN: ADMIN },
    });
    let output = "";
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString();
    });
    // "close", not "exit": the output is complete only once the pipes have closed.
    const exited = new Promise<number>((resolve) => child.on("close", (code) => resolve(code ?? -1)));
    return { output: () => output, exited };
  }

  beforeAll(async () => {
    api = await openTestApi("cli_client", {
      tokens: [{ name: "ops", token: ADMIN, scopes: ["admin"] }],
      queue: { progressIntervalMs: 20 },
    });
    url = await api.url();
    worker = new Worker(api.queue, {
      id: "cli-worker",
      capacity: 2,
      // params.iterations: report that many steps, then complete; otherwise run until stopped.
      handler: async (ctx) => {
        const iterations = Number(ctx.build.params.iterations ?? 0);
        for (let i = 1; iterations === 0 || i <= iterations; i++) {
          if (ctx.signal.aborted) throw new Error("stopped");
          await ctx.progress({ phase: "training", iteration: i, maxIterations: iterations || 1000 });
          await new Promise((r) => setTimeout(r, 50));
        }
        return { image: "oculus/test:1" };
      },
    });
    await worker.start();
  });
  afterAll(async () => {
    await worker?.stop();
    await api?.cleanup();
  });

  it("submits, shows status, queue and workers, and watches a build to completion (exit 0)", async () => {
    const submitted = await oculus([
      "submit",
      "--strategy",
      "cli-s",
      "--priority",
      "5",
      "--params",
      '{"iterations":6}',
      "--json",
    ]);
    expect(submitted.code).toBe(0);
    const { build } = JSON.parse(submitted.stdout) as { build: { id: string; priority: number } };
    expect(build.priority).toBe(5);

    const watching = watch(build.id);
    expect(await watching.exited).toBe(0);
    expect(watching.output()).toMatch(/completed/);
    expect(watching.output()).toMatch(/iteration 6\/6/);

    const status = await oculus(["status", build.id]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/status\s+completed/);
    expect(status.stdout).toMatch(/worker\s+cli-worker/);

    const queue = await oculus(["queue"]);
    expect(queue.code).toBe(0);
    expect(queue.stdout).toMatch(/mode postgres/);
    expect(queue.stdout).toMatch(/cli-worker/);

    const workers = JSON.parse((await oculus(["workers", "--json"])).stdout) as { workers: { id: string }[] };
    expect(workers.workers.map((w) => w.id)).toContain("cli-worker");
  });

  it("stops a running build with a reason (watch exits 1), then retries it", async () => {
    const submitted = await oculus(["submit", "--strategy", "cli-stop", "--json"]);
    const { build } = JSON.parse(submitted.stdout) as { build: { id: string } };
    const watching = watch(build.id);
    await eventually(async () => (await api.queue.get(build.id)).progress !== null);
    // The watch has its snapshot (it is following) before the stop, so it sees the stop happen.
    await eventually(async () => watching.output().includes(`build ${build.id}`), 30_000);
    const stopped = await oculus(["stop", build.id, "--reason", "wrong parameters"]);
    expect(stopped.code).toBe(0);
    expect(stopped.stdout).toMatch(/stopping|stopped/);
    expect(await watching.exited).toBe(1);
    expect(watching.output()).toMatch(/stopping: by ops, reason wrong parameters/);
    expect(watching.output()).toMatch(/ended stopped/);
    const record = await api.queue.get(build.id);
    expect(record).toMatchObject({ status: "stopped", stoppedBy: "ops", stopReason: "wrong parameters" });

    const retried = await oculus(["retry", build.id]);
    expect(retried.code).toBe(0);
    expect(retried.stdout).toMatch(/queued/);
    await eventually(async () => (await api.queue.get(build.id)).status === "running");
    await oculus(["stop", build.id]);
  });

  it("shows control characters of user strings escaped in status, queue, watch and stop", async () => {
    // ESC [2J clears the screen, CR rewrites the line, a bidi override reverses what follows.
    const evil = "evil\u001b[2J\r\nFAKE\u0007\u202e";
    const shown = "evil\\x1b[2J\\r\\nFAKE\\x07\\u202e";
    const { build } = await api.queue.submit({ strategyId: evil, params: { iterations: 1000 } });
    await eventually(async () => (await api.queue.get(build.id)).status === "running");
    const outputs: string[] = [];
    const status = await oculus(["status", build.id]);
    expect(status.stdout).toContain(`strategy  ${shown}`);
    outputs.push(status.stdout);
    const queue = await oculus(["queue"]);
    outputs.push(queue.stdout);
    const watching = watch(build.id);
    await eventually(async () => watching.output().includes(`build ${build.id}`), 30_000);
    const stopped = await oculus(["stop", build.id, "--reason", "why\u001b]0;title\u0007"]);
    expect(stopped.code).toBe(0);
    expect(await watching.exited).toBe(1);
    expect(watching.output()).toContain(shown);
    expect(watching.output()).toContain("reason why\\x1b]0;title\\x07");
    outputs.push(watching.output(), (await oculus(["status", build.id])).stdout);
    for (const output of outputs) {
      // No raw ESC, BEL, CR or bidi override reaches the terminal (watch is not a TTY here: no bar).
      for (const raw of ["\u001b", "\u0007", "\r", "\u202e"]) expect(output).not.toContain(raw);
    }
    // --json keeps the exact value (JSON escapes control characters itself).
    const json = JSON.parse((await oculus(["status", build.id, "--json"])).stdout) as {
      build: { strategyId: string };
    };
    expect(json.build.strategyId).toBe(evil);
  });

  it("submits with --require and --timeout; status shows the requirements (no worker has them: no ETA)", async () => {
    const submitted = await oculus([
      "submit",
      "--strategy",
      "cli-gpu",
      "--require",
      "gpu=true",
      "--require",
      "arch=arm64",
      "--timeout",
      "600",
      "--json",
    ]);
    expect(submitted.code).toBe(0);
    const { build, etaSeconds } = JSON.parse(submitted.stdout);
    expect(build).toMatchObject({ requires: { gpu: "true", arch: "arm64" }, timeoutSeconds: 600 });
    expect(etaSeconds).toBeNull();
    const status = await oculus(["status", build.id]);
    expect(status.stdout).toMatch(/requires\s+gpu=true arch=arm64/);
    const bad = await oculus(["submit", "--strategy", "x", "--require", "gpu"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--require: expected key=value/);
    await oculus(["stop", build.id]);
  });

  it("says clearly what went wrong", async () => {
    const notFound = await oculus(["status", "00000000-0000-4000-8000-000000000000"]);
    expect(notFound.code).toBe(1);
    expect(notFound.stderr).toMatch(/does not exist.*HTTP 404/);

    const badId = await oculus(["stop", "nope"]);
    expect(badId.code).toBe(1);
    expect(badId.stderr).toMatch(/id.*HTTP 400/);

    const badParams = await oculus(["submit", "--strategy", "x", "--params", "{nope"]);
    expect(badParams.code).toBe(2);
    expect(badParams.stderr).toMatch(/--params: not valid JSON/);

    const noToken = await oculus(["queue"], { OCULUS_TOKEN: "" });
    expect(noToken.code).toBe(1);
    expect(noToken.stderr).toMatch(/HTTP 401/);

    const unreachable = await oculus(["queue"], { OCULUS_URL: "http://127.0.0.1:9" });
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toMatch(/cannot reach the Oculus API at http:\/\/127\.0\.0\.1:9/);

    const badUrl = await oculus(["queue", "--url", "ftp://x"]);
    expect(badUrl.code).toBe(2);
    expect(badUrl.stderr).toMatch(/--url/);
  });
});
