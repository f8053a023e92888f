/**
 * Full build logs (migration 0009): a real build command's stdout and stderr stored in chunks by its
 * worker, read back over HTTP (whole, Range 206/416, ?offset paging), followed live over SSE (resumed
 * by byte offset), printed by `oculus logs` and `oculus status`; the per-build cap; prune removing
 * the chunks; and a worker killed with SIGKILL mid-build: what it flushed survives, and the retry's
 * output follows a separator naming the attempt.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { commandHandler } from "../../src/worker/command-handler.js";
import { Worker } from "../../src/worker/worker.js";
import { openTestApi, type TestApi } from "../helpers/api.js";
import { type OculusProcess, oculus, spawnOculus } from "../helpers/oculus-cli.js";
import { sql, TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

/** Prints `lines` numbered lines on stdout and two on stderr; `sleep` seconds first if asked. */
const COMMAND = [
  'if [ -n "$(echo "$OCULUS_BUILD_PARAMS" | grep wait)" ]; then sleep 2; fi',
  'n=$(echo "$OCULUS_BUILD_PARAMS" | sed -E \'s/.*"lines":([0-9]+).*/\\1/\')',
  'i=1; while [ "$i" -le "$n" ]; do echo "line $i ça va"; i=$((i+1)); done',
  'echo "warning on stderr" >&2',
  'echo "::result {\\"ok\\":true}"',
].join("\n");

async function readSse(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers: { accept: "text/event-stream", ...headers } });
  const text = await res.text();
  const events = text
    .split("\n\n")
    .filter((frame) => frame.includes("event:"))
    .map((frame) => {
      const field = (name: string) => frame.match(new RegExp(`^${name}: (.*)$`, "m"))?.[1];
      return { id: field("id"), event: field("event"), data: JSON.parse(field("data") ?? "null") };
    });
  return { status: res.status, events };
}

describe("build logs: HTTP, SSE, CLI, cap, prune", () => {
  let api: TestApi;
  let worker: Worker;
  let url: string;

  beforeAll(async () => {
    api = await openTestApi("build_logs", { queue: { logMaxBytes: 64 * 1024 } });
    url = await api.url();
    worker = new Worker(api.queue, { id: "log-worker", capacity: 2, handler: commandHandler(COMMAND) });
    await worker.start();
  });
  afterAll(async () => {
    await worker?.stop();
    await api?.cleanup();
  });

  async function finished(id: string) {
    return eventually(async () => {
      const b = await api.queue.get(id);
      return ["completed", "failed", "stopped"].includes(b.status) ? b : undefined;
    }, 30_000);
  }

  it("stores stdout and stderr with a run separator; serves it whole, by Range and by offset", async () => {
    const { build } = await api.queue.submit({ strategyId: "logs", params: { lines: 300 } });
    expect((await finished(build.id)).status).toBe("completed");

    const whole = await api.fetch("GET", `/v1/builds/${build.id}/logs`);
    expect(whole.status).toBe(200);
    expect(whole.headers["content-type"]).toMatch(/^text\/plain/);
    expect(whole.headers["x-log-complete"]).toBe("true");
    const lines = whole.text.split("\n");
    expect(lines[0]).toMatch(/^--- attempt 1 \(lease \d+\) on worker log-worker ---$/);
    expect(lines).toContain("line 1 ça va");
    expect(lines).toContain("line 300 ça va");
    expect(lines).toContain("warning on stderr");
    expect(whole.text).not.toContain("::result");
    const size = Buffer.byteLength(whole.text);
    expect(Number(whole.headers["x-log-size"])).toBe(size);

    // Range: 206 with Content-Range; the pages add up to the whole log, byte for byte.
    const first = await fetch(`${url}/v1/builds/${build.id}/logs`, { headers: { range: "bytes=0-99" } });
    expect(first.status).toBe(206);
    expect(first.headers.get("content-range")).toBe(`bytes 0-99/${size}`);
    const rest = await fetch(`${url}/v1/builds/${build.id}/logs`, { headers: { range: "bytes=100-" } });
    expect(rest.status).toBe(206);
    const joined = Buffer.concat([
      Buffer.from(await first.arrayBuffer()),
      Buffer.from(await rest.arrayBuffer()),
    ]).toString("utf8");
    expect(joined).toBe(whole.text);
    const suffix = await fetch(`${url}/v1/builds/${build.id}/logs`, { headers: { range: "bytes=-20" } });
    expect(Buffer.from(await suffix.arrayBuffer()).toString()).toBe(
      Buffer.from(whole.text)
        .subarray(size - 20)
        .toString(),
    );
    const beyond = await fetch(`${url}/v1/builds/${build.id}/logs`, { headers: { range: `bytes=${size}-` } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get("content-range")).toBe(`bytes */${size}`);

    const fromOffset = await api.fetch("GET", `/v1/builds/${build.id}/logs?offset=${size - 10}`);
    expect(fromOffset.status).toBe(200);
    expect(fromOffset.headers["x-log-next-offset"]).toBe(String(size));
    expect((await api.fetch("GET", `/v1/builds/${build.id}/logs?offset=${size}`)).text).toBe("");
    expect((await api.fetch("GET", `/v1/builds/${build.id}/logs?offset=${size + 1}`)).status).toBe(416);

    // Bad input: 400 naming the field; an unknown build: 404.
    const bad = await api.fetch("GET", `/v1/builds/${build.id}/logs?offset=-1`);
    expect(bad.status).toBe(400);
    expect(bad.json.error.message).toMatch(/offset/);
    const badRange = await fetch(`${url}/v1/builds/${build.id}/logs`, { headers: { range: "lines=1-2" } });
    expect(badRange.status).toBe(400);
    const missing = await api.fetch("GET", "/v1/builds/00000000-0000-4000-8000-000000000000/logs");
    expect(missing.status).toBe(404);
  });

  it("streams the log live over SSE until the build ends, resumable by byte offset", async () => {
    const { build } = await api.queue.submit({ strategyId: "live", params: { lines: 50, wait: true } });
    const live = await readSse(`${url}/v1/builds/${build.id}/logs/stream`);
    expect(live.status).toBe(200);
    const logEvents = live.events.filter((e) => e.event === "log");
    const text = logEvents.map((e) => e.data.text).join("");
    const whole = (await api.fetch("GET", `/v1/builds/${build.id}/logs`)).text;
    expect(text).toBe(whole);
    expect(logEvents.some((e) => e.data.stream === "stderr")).toBe(true);
    expect(live.events.at(-1)).toMatchObject({ event: "end", data: { status: "completed" } });

    // Resume after the first event: the rest, nothing twice.
    const firstId = logEvents[0]?.id ?? "0";
    const resumed = await readSse(`${url}/v1/builds/${build.id}/logs/stream`, { "last-event-id": firstId });
    const resumedText = resumed.events
      .filter((e) => e.event === "log")
      .map((e) => e.data.text)
      .join("");
    expect(resumedText).toBe(Buffer.from(whole).subarray(Number(firstId)).toString());
  });

  it("a stream of a build with no output yet answers at once (': stream open'); HEAD answers the headers only", async () => {
    // Waits an hour for its run time: no output comes, and no heartbeat before 15 s.
    const { build } = await api.queue.submit({
      strategyId: "quiet",
      runAt: new Date(Date.now() + 3_600_000).toISOString(),
    });
    const stream = `${url}/v1/builds/${build.id}/logs/stream`;
    const controller = new AbortController();
    try {
      const res = await fetch(stream, { signal: controller.signal });
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
      const first = await (res.body as ReadableStream<Uint8Array>).getReader().read();
      expect(new TextDecoder().decode(first.value)).toBe(": stream open\n\n");
    } finally {
      controller.abort();
    }
    // Node sends a HEAD's headers when the response ends: through the stream that was never.
    const head = await fetch(stream, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(
      (await fetch(`${url}/v1/builds/00000000-0000-4000-8000-000000000000/logs/stream`, { method: "HEAD" }))
        .status,
    ).toBe(404);
  });

  it("oculus logs prints the whole log; --follow until the end; status shows result and output", async () => {
    const { build } = await api.queue.submit({ strategyId: "cli-logs", params: { lines: 5, wait: true } });
    const env = { OCULUS_URL: url };
    const followed = await oculus(["logs", build.id, "--follow"], env);
    expect(followed.code).toBe(0);
    expect(followed.stdout).toContain("line 5 ça va");
    expect(followed.stderr).toContain("build completed");
    const whole = await oculus(["logs", build.id], env);
    expect(whole.stdout).toBe((await api.fetch("GET", `/v1/builds/${build.id}/logs`)).text);
    const status = await oculus(["status", build.id], env);
    expect(status.stdout).toMatch(/result\s+\{"ok":true\}/);
    expect(status.stdout).toContain("  line 5 ça va");
    const builds = await oculus(["builds", "--status", "completed", "--strategy", "cli-logs"], env);
    expect(builds.stdout).toContain(build.id);
    expect((await oculus(["logs", "00000000-0000-4000-8000-000000000000"], env)).code).toBe(1);
  });

  it("caps a build's log with one marker line", async () => {
    const { build } = await api.queue.submit({ strategyId: "big", params: { lines: 5000 } });
    expect((await finished(build.id)).status).toBe("completed");
    const res = await api.fetch("GET", `/v1/builds/${build.id}/logs`);
    expect(res.headers["x-log-truncated"]).toBe("true");
    expect(Buffer.byteLength(res.text)).toBeLessThan(64 * 1024 + 200);
    expect(res.text.trimEnd().split("\n").at(-1)).toMatch(/^--- log truncated: .* cap of 65536 bytes/);
  });

  it("prune deletes a build's log chunks with it", async () => {
    const { build } = await api.queue.submit({ strategyId: "pruned", params: { lines: 3 } });
    await finished(build.id);
    const schema = api.queue.store.db.schema;
    const count = async () =>
      Number(
        (
          await sql<{ n: string }>(schema, "SELECT count(*) AS n FROM build_log_chunks WHERE build_id = $1", [
            build.id,
          ])
        )[0]?.n,
      );
    expect(await count()).toBeGreaterThan(0);
    await api.queue.store.db.query(
      "UPDATE builds SET finished_at = now() - interval '2 days' WHERE id = $1",
      [build.id],
    );
    const [stored] = await sql<{ bytes: string }>(
      schema,
      "SELECT bytes FROM build_logs WHERE build_id = $1",
      [build.id],
    );
    const bytes = Number(stored?.bytes);
    expect(bytes).toBeGreaterThan(0);
    // The dry run counts the log bytes it would free (other builds of this file are newer); the prune frees them.
    expect(await api.queue.prune({ olderThanMs: 86_400_000, dryRun: true })).toMatchObject({
      builds: 1,
      logBytes: bytes,
    });
    expect(await count()).toBeGreaterThan(0);
    expect(await api.queue.prune({ olderThanMs: 86_400_000 })).toMatchObject({ builds: 1, logBytes: bytes });
    expect(await count()).toBe(0);
    const sizes = await sql(schema, "SELECT 1 FROM build_logs WHERE build_id = $1", [build.id]);
    expect(sizes).toEqual([]);
  });
});

describe("build logs while Redis is down", () => {
  it("are written and read from PostgreSQL alone", async () => {
    const redis = await RedisServer.start({ appendonly: false });
    const api = await openTestApi("build_logs_redis_down", { queue: { redisUrl: redis.url } });
    const worker = new Worker(api.queue, { id: "redisless", handler: commandHandler(COMMAND) });
    try {
      await redis.kill9();
      await worker.start();
      const { build } = await api.queue.submit({ strategyId: "no-redis", params: { lines: 3 } });
      await eventually(async () => (await api.queue.get(build.id)).status === "completed", 30_000);
      const res = await api.fetch("GET", `/v1/builds/${build.id}/logs`);
      expect(res.status).toBe(200);
      expect(res.text).toContain("line 3 ça va");
      const live = await readSse(`${await api.url()}/v1/builds/${build.id}/logs/stream`);
      expect(live.events.at(-1)).toMatchObject({ event: "end", data: { status: "completed" } });
    } finally {
      await worker.stop();
      await api.cleanup();
      await redis.destroy();
    }
  });
});

describe("build logs: a worker killed with SIGKILL mid-build", () => {
  let q: Awaited<ReturnType<typeof openTestQueue>>;
  const workers: OculusProcess[] = [];
  const dir = mkdtempSync(path.join(tmpdir(), "oculus-log-kill-"));

  beforeAll(async () => {
    q = await openTestQueue("build_logs_kill");
  });
  afterAll(async () => {
    for (const w of workers) w.child.kill("SIGKILL");
    await Promise.all(workers.map((w) => w.exited));
    await q?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("keeps what was flushed and appends the retry's output after an attempt separator", async () => {
    const marker = path.join(dir, "first-run-done");
    // First run: prints, then hangs; the retry finds the marker and completes.
    const command = `if [ -f ${marker} ]; then echo "second run"; exit 0; fi; touch ${marker}; echo "first run"; sleep 120`;
    const start = (id: string) => {
      const w = spawnOculus(
        ["worker", "--id", id, "--command", command, "--heartbeat-ms", "300", "--dead-after-ms", "2000"],
        { DATABASE_URL: TEST_DATABASE_URL, OCULUS_SCHEMA: q.schema, OCULUS_PREFIX: q.prefix },
      );
      workers.push(w);
      return w;
    };
    const first = start("kill-w1");
    const { build } = await q.queue.submit({ strategyId: "killed", maxRetries: 2 });
    const logOf = async () => (await q.queue.readLog(build.id, 0, 1000)).map((c) => c.text).join("");
    await eventually(async () => (await logOf()).includes("first run"), 30_000);
    first.child.kill("SIGKILL");
    await first.exited;
    start("kill-w2");
    const done = await eventually(async () => {
      const b = await q.queue.get(build.id);
      return b.status === "completed" ? b : undefined;
    }, 60_000);
    const log = await logOf();
    const lines = log.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^--- attempt 1 \(lease \d+\) on worker kill-w1 ---$/);
    expect(lines[1]).toBe("first run");
    expect(lines[2]).toMatch(/^--- attempt \d \(lease \d+\) on worker kill-w2 ---$/);
    expect(lines[3]).toBe("second run");
    expect(lines).toHaveLength(4);
    expect(done.status).toBe("completed");
  });
});
