/**
 * `oculus watch` across an API restart: the server goes away mid-build (its streams end, then
 * connections are refused), comes back on the same port, and the watch reconnects with the last event
 * id it saw: it reports the build's end and exits 0, and no progress step is shown twice.
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/core/logger.js";
import { authConfig } from "../../src/http/auth.js";
import { buildServer, listenApi } from "../../src/http/server.js";
import { eventually, openTestQueue } from "../helpers/queue.js";

const BIN = path.resolve("dist/src/cli/main.js");

describe("oculus watch across an API restart", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });

  it("reconnects with Last-Event-ID, misses nothing, repeats nothing, exits 0 on completion", async () => {
    const { queue, cleanup } = await openTestQueue("watch_restart", { progressIntervalMs: 0 });
    cleanups.push(cleanup);
    const auth = authConfig([]);
    const serve = async (port: number) => {
      const app = buildServer(queue, { auth, logger: silentLogger(), rateLimit: false });
      const { port: bound } = await listenApi(app, { host: "127.0.0.1", port, auth });
      return { app, port: bound };
    };
    let server = await serve(0);
    cleanups.push(() => server.app.close());

    const { build } = await queue.submit({ strategyId: "watch-restart" });
    const [claimed] = await queue.claim("w-restart", 1);
    if (!claimed) throw new Error("nothing claimed");
    const child = spawn("node", [BIN, "watch", build.id], {
      env: { PATH: process.env.PATH ?? "", OCULUS_URL: `http://127.0.0.1:${server.port}` },
    });
    let output = "";
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString();
    });
    // "close", not "exit": the output is complete only once the pipes have closed.
    const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
    cleanups.push(async () => void child.kill("SIGKILL"));

    await eventually(async () => output.includes(`build ${build.id}`), 30_000);
    for (let i = 1; i <= 3; i++)
      await queue.reportProgress(build.id, claimed.lease, { iteration: i, maxIterations: 6 });
    await eventually(async () => output.includes("iteration 3/6"), 30_000);

    await server.app.close(); // streams end; the port is closed while the build goes on
    for (let i = 4; i <= 5; i++)
      await queue.reportProgress(build.id, claimed.lease, { iteration: i, maxIterations: 6 });
    await eventually(async () => output.includes("reconnecting"), 30_000);
    server = await serve(server.port);
    await queue.reportProgress(build.id, claimed.lease, { iteration: 6, maxIterations: 6 });
    await queue.complete(build.id, claimed.lease, { ok: true });

    expect(await exited).toBe(0);
    expect(output).toMatch(/completed\s*$/);
    for (let i = 1; i <= 6; i++) {
      const shown = output.split("\n").filter((line) => line.includes(`iteration ${i}/6`));
      expect(shown, `iteration ${i} in:\n${output}`).toHaveLength(1);
    }
  });
});
