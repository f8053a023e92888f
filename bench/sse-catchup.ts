/**
 * What one SSE catch-up costs the server: `GET /v1/events?lastEventId=0` over a backlog of N events of
 * about 1 KB each (default 200,000), against the real API in a process of its own (this file, started
 * again with `--serve`), so that its RSS and CPU are the server's alone.
 *
 *   npm run -s build && node dist/bench/sse-catchup.js [--events 200000] [--bytes 1000]
 *
 * Two runs, each on a fresh server process over the same backlog, each with another client holding a
 * live stream open meanwhile (as a dashboard would), so that the hub is running and its one-time
 * start read (the newest 10,000 events) is not counted:
 * - `full`: the client reads the whole catch-up (and the stream goes on live); it stops once it has
 *   every event. Reported: the server's peak RSS above its idle RSS, and how long the catch-up took.
 * - `disconnect`: the client goes away after the first MiB or 300 ms, whichever comes first. Reported: the peak RSS above idle, how
 *   long the server's CPU stayed busy after the disconnect (until a 200 ms window with under 20 ms of
 *   CPU), and how long until the server logged "event stream ended" for it.
 *
 * The backlog is inserted with one SQL statement (progress events of made-up builds: build_events has
 * no foreign key). The server runs with the resume cap (OCULUS_HTTP_MAX_RESUME_EVENTS) above N, so
 * that the catch-up is served rather than refused with 410.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { authConfig } from "../src/http/auth.js";
import { buildServer, listenApi, type ServerOptions } from "../src/http/server.js";
import { BuildQueue } from "../src/index.js";
import { DATABASE_URL, dropSchema, newSchema, withClient } from "./postgres.js";
import { cpuMs, rssBytes } from "./proc.js";

const { values: args } = parseArgs({
  options: {
    serve: { type: "boolean", default: false },
    schema: { type: "string" },
    "log-file": { type: "string", default: "/dev/null" },
    events: { type: "string", default: "200000" },
    bytes: { type: "string", default: "1000" },
  },
});

const mib = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;

if (args.serve) await serve();
else await main();

/** The server process: the API over the schema, open mode on loopback, no rate limit. */
async function serve(): Promise<void> {
  const schema = args.schema;
  if (!schema) throw new Error("--schema is required");
  const logger = pino({ level: "info" }, pino.destination({ dest: args["log-file"], sync: false }));
  const queue = await BuildQueue.open({ databaseUrl: DATABASE_URL, schema, logger });
  // The resume cap well above the backlog (see the header). Cast: so that this file also builds on
  // the code before the cap, for the "before" figure.
  const limits = { maxResumeEvents: Number(args.events) * 2 } as Partial<ServerOptions>;
  const app = buildServer(queue, { auth: authConfig([]), logger, rateLimit: false, ...limits });
  const { port } = await listenApi(app, { host: "127.0.0.1", port: 0, auth: authConfig([]) });
  process.stdout.write(`ready ${process.pid} ${port}\n`);
  process.stdin.resume();
  process.stdin.on("end", () => {
    void app
      .close()
      .then(() => queue.close())
      .finally(() => process.exit(0));
  });
}

async function main(): Promise<void> {
  const events = Number(args.events);
  const bytes = Number(args.bytes);
  const schema = newSchema("sse_catchup");
  try {
    const queue = await BuildQueue.open({ databaseUrl: DATABASE_URL, schema });
    await queue.close();
    await withClient(async (c) => {
      await c.query(`SET search_path = "${schema}"`);
      await c.query(
        `INSERT INTO build_events (build_id, type, from_status, to_status, actor, data)
         SELECT gen_random_uuid(), 'progress', 'running', 'running', 'bench',
                jsonb_build_object('phase', repeat('x', $2::int), 'percent', n % 100)
         FROM generate_series(1, $1::int) AS n`,
        [events, bytes],
      );
      await c.query("ANALYZE build_events");
    });
    console.log(`backlog: ${events} events of ~${bytes} bytes in schema ${schema}`);
    console.log(JSON.stringify({ run: "full", ...(await run(schema, events, "full")) }));
    console.log(JSON.stringify({ run: "disconnect", ...(await run(schema, events, "disconnect")) }));
  } finally {
    await dropSchema(schema);
  }
}

interface Server {
  child: ChildProcess;
  pid: number;
  port: number;
  logFile: string;
}

async function startServer(schema: string, label: string): Promise<Server> {
  const logFile = join(tmpdir(), `sse-catchup-${process.pid}-${label}.log`);
  const child = spawn(
    process.execPath,
    [fileURLToPath(import.meta.url), "--serve", "--schema", schema, "--log-file", logFile],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  for await (const line of lines) {
    const [word, pid, port] = line.split(" ");
    if (word === "ready") return { child, pid: Number(pid), port: Number(port), logFile };
  }
  throw new Error("server exited before it was ready");
}

async function stopServer(server: Server): Promise<void> {
  const exited = new Promise((resolve) => server.child.once("exit", resolve));
  server.child.stdin?.end();
  await exited;
}

async function run(schema: string, events: number, mode: "full" | "disconnect") {
  const server = await startServer(schema, mode);
  try {
    // A live stream held open, as a dashboard's: the hub is then running (its one-time start read of
    // the newest 10,000 events is not in the figures), as on a server that has clients.
    const live = new AbortController();
    const liveRes = await fetch(`http://127.0.0.1:${server.port}/v1/events`, { signal: live.signal });
    const liveReader = (liveRes.body as ReadableStream<Uint8Array>).getReader();
    void (async () => {
      for (;;) if ((await liveReader.read().catch(() => ({ done: true }))).done) return;
    })();
    await busyAfter(server.pid); // let start-up settle
    const idleRss = rssBytes(server.pid);
    let peakRss = idleRss;
    const sampler = setInterval(() => {
      peakRss = Math.max(peakRss, rssBytes(server.pid));
    }, 20);
    const controller = new AbortController();
    const started = performance.now();
    const res = await fetch(`http://127.0.0.1:${server.port}/v1/events?lastEventId=0`, {
      signal: controller.signal,
    });
    if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let received = 0;
    let frames = 0;
    let tail = "";
    // The disconnecting client leaves after 1 MiB or 300 ms, whichever comes first.
    const leave = mode === "disconnect" ? setTimeout(() => void reader.cancel(), 300) : undefined;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      received += value.length;
      // Each event frame has one "event: " line (comments have none); the tail of the previous chunk
      // catches one split across two chunks.
      const text = tail + Buffer.from(value).toString("latin1");
      frames += text.split("\nevent: ").length - 1;
      tail = text.slice(-8);
      if (tail.includes("\nevent: ")) tail = "";
      if (mode === "disconnect" && received >= 2 ** 20) break;
      if (mode === "full" && frames >= events) break;
    }
    const readMs = performance.now() - started;
    clearTimeout(leave);
    controller.abort();
    const disconnectedAt = Date.now();
    const busyMs = await busyAfter(server.pid);
    clearInterval(sampler);
    await new Promise((r) => setTimeout(r, 200));
    const endedMs = streamEndedAfter(server.logFile, disconnectedAt);
    live.abort();
    return {
      events,
      receivedMiB: mib(received),
      framesReceived: frames,
      readMs: Math.round(readMs),
      idleRssMiB: mib(idleRss),
      peakRssAboveIdleMiB: mib(peakRss - idleRss),
      cpuBusyAfterDisconnectMs: busyMs,
      streamEndedLoggedAfterDisconnectMs: endedMs,
    };
  } finally {
    await stopServer(server);
  }
}

/** Ms from now until a 200 ms window in which the process used under 20 ms of CPU (gives up at 120 s). */
async function busyAfter(pid: number): Promise<number> {
  const start = performance.now();
  let before = cpuMs(pid);
  for (;;) {
    await new Promise((r) => setTimeout(r, 200));
    const now = cpuMs(pid);
    const elapsed = performance.now() - start;
    if (now - before < 20) return Math.max(0, Math.round(elapsed - 200));
    if (elapsed > 120_000) return Math.round(elapsed);
    before = now;
  }
}

/** Ms from the disconnect to the server's first "event stream ended" log line (null: none logged). */
function streamEndedAfter(logFile: string, disconnectedAt: number): number | null {
  const lines = readFileSync(logFile, "utf8").split("\n").filter(Boolean);
  for (const line of lines) {
    const entry = JSON.parse(line) as { msg?: string; time?: number };
    if (entry.msg === "event stream ended" && entry.time !== undefined) return entry.time - disconnectedAt;
  }
  return null;
}
