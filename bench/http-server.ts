/**
 * The SERVER process of the HTTP benchmark (bench/http.ts starts it as `node dist/bench/http-server.js
 * --mode redis|postgres --database-url URL --schema S [--redis-url URL] --token T --log-file F`): the real API, as
 * `oculus up` serves it, in a process of its own, so that the load generator does not share its event
 * loop.
 *
 * Like `oculus up --workers 0`: `BuildQueue.open` with the default pool (10) and reconcile interval
 * (10 s), the reaper started, `buildServer` + `listenApi` on 127.0.0.1 (any free port), request
 * logging at `info` (Fastify's two lines per request, pino, the product's redaction) written to a
 * file (the parent reads it afterwards: warnings, errors, why event streams ended), warnings and errors
 * also to stderr. Auth ON with one token (`bench`, scopes submit+read:
 * the auth hook hashes and compares it on every request); the rate limit OFF (the load would exceed
 * any sensible budget). No workers: submitted builds stay queued.
 *
 * The same process also runs the library-side measurements (queue.submit / queue.get in a closed
 * loop), on the same BuildQueue, so that the HTTP overhead is the only difference.
 *
 * Protocol, one line each. stdin:
 *   stats-start                        start an event-loop utilization window
 *   stats-end                          -> `stats <json>` (LoopStats)
 *   library-submit <tag> <conc> <sec>  -> `library-submit <json>` (LibraryRun)
 *   library-read <conc> <sec> <file>   -> `library-read <json>` (ids: one per line in <file>)
 *   fill <n>                           -> `filled <n>` (submitMany of n builds, tag "fill")
 * stdout: `ready <pid> <port>` once listening. The process closes the server and the queue and exits
 * when its stdin closes (the parent is gone).
 */
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { LOG_REDACTION } from "../src/core/logger.js";
import { authConfig } from "../src/http/auth.js";
import { buildServer, listenApi } from "../src/http/server.js";
import { BuildQueue } from "../src/index.js";
import { type Distribution, distribution } from "./stats.js";

const { values: args } = parseArgs({
  options: {
    mode: { type: "string" },
    "database-url": { type: "string" },
    schema: { type: "string" },
    "redis-url": { type: "string" },
    token: { type: "string" },
    "log-file": { type: "string", default: "/dev/null" },
  },
});

/**
 * This process's event loop over a window (stats-start .. stats-end, as this process handled the two
 * commands; a busy loop handles them late). CPU and RSS are read from /proc by the parent instead,
 * on the parent's clock (bench/http.ts).
 */
export interface LoopStats {
  wallMs: number;
  /** Share of the window the event loop was busy (performance.eventLoopUtilization). */
  eventLoopUtilization: number;
  heapUsedEndMiB: number;
}

/** One closed-loop run of library calls at a concurrency. */
export interface LibraryRun {
  concurrency: number;
  calls: number;
  errors: number;
  firstError: string | null;
  wallMs: number;
  perSec: number;
  ms: Distribution;
}

const say = (line: string) => process.stdout.write(`${line}\n`);
const mib = (bytes: number) => bytes / 2 ** 20;

const mode = args.mode;
if (mode !== "redis" && mode !== "postgres") throw new Error("--mode must be redis or postgres");
const databaseUrl = args["database-url"];
const schema = args.schema;
const token = args.token;
if (!databaseUrl || !schema || !token) throw new Error("--database-url, --schema and --token are required");

// Request logging on, as `oculus up` runs it at the default level, to a file (asynchronous writes, as
// to a log collector's pipe); warnings and errors also to stderr (the parent shows them).
const logger = pino(
  { name: "oculus", level: "info", redact: LOG_REDACTION },
  pino.multistream([
    { level: "info", stream: pino.destination({ dest: args["log-file"], sync: false }) },
    { level: "warn", stream: pino.destination(2) },
  ]),
);

const queue = await BuildQueue.open({
  databaseUrl,
  redisUrl: mode === "redis" ? args["redis-url"] : undefined,
  schema,
  prefix: schema,
  logger,
});
if (queue.mode !== mode) throw new Error(`queue opened in ${queue.mode} mode, expected ${mode}`);
queue.startReaper();
const auth = authConfig([{ name: "bench", token, scopes: ["submit", "read"] }]);
const app = buildServer(queue, { auth, logger, rateLimit: false });
const { port } = await listenApi(app, { host: "127.0.0.1", port: 0, auth });

let closing = false;
async function shutdown(): Promise<void> {
  if (closing) return;
  closing = true;
  setTimeout(() => process.exit(0), 5000).unref();
  await app.close().catch(() => undefined);
  await queue.close().catch(() => undefined);
  process.exit(0);
}
process.stdin.on("close", () => void shutdown());

// ------------------------------------------------------------------ stats window

let window: { wall: number; elu: ReturnType<typeof performance.eventLoopUtilization> } | null = null;

function statsStart(): void {
  window = { wall: performance.now(), elu: performance.eventLoopUtilization() };
}

function statsEnd(): LoopStats {
  if (!window) throw new Error("stats-end without stats-start");
  const w = window;
  window = null;
  return {
    wallMs: performance.now() - w.wall,
    eventLoopUtilization: performance.eventLoopUtilization(w.elu).utilization,
    heapUsedEndMiB: mib(process.memoryUsage().heapUsed),
  };
}

// ------------------------------------------------------------------ library loops

/** `concurrency` loops calling `call(n)` back to back for `seconds`; every call timed. */
async function closedLoop(
  concurrency: number,
  seconds: number,
  call: (n: number) => Promise<unknown>,
): Promise<LibraryRun> {
  const times: number[] = [];
  let errors = 0;
  let firstError: string | null = null;
  let next = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  const loop = async () => {
    while (performance.now() < end) {
      const n = next++;
      const t0 = performance.now();
      try {
        await call(n);
        times.push(performance.now() - t0);
      } catch (err) {
        errors += 1;
        firstError ??= err instanceof Error ? err.message : String(err);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  const wallMs = performance.now() - start;
  return {
    concurrency,
    calls: times.length,
    errors,
    firstError,
    wallMs,
    perSec: (times.length / wallMs) * 1000,
    ms: distribution(times),
  };
}

function librarySubmit(tag: string, concurrency: number, seconds: number): Promise<LibraryRun> {
  // The same input the HTTP run posts: strategyId plus params tagging the run and the request.
  return closedLoop(concurrency, seconds, (n) =>
    queue.submit({ strategyId: "bench-http", params: { run: tag, n } }, { actor: "bench" }),
  );
}

function libraryRead(concurrency: number, seconds: number, file: string): Promise<LibraryRun> {
  const ids = readFileSync(file, "utf8").split("\n").filter(Boolean);
  if (ids.length === 0) throw new Error(`no ids in ${file}`);
  // What GET /v1/builds/:id does: the build, and its position while queued.
  return closedLoop(concurrency, seconds, async (n) => {
    const build = await queue.get(ids[n % ids.length] as string);
    return build.status === "queued" ? await queue.position(build.id) : null;
  });
}

async function fill(n: number): Promise<void> {
  const chunk = 1000;
  for (let done = 0; done < n; done += chunk) {
    const size = Math.min(chunk, n - done);
    await queue.submitMany(
      Array.from({ length: size }, (_, i) => ({
        strategyId: "bench-http",
        params: { run: "fill", n: done + i },
      })),
      { actor: "bench" },
    );
  }
}

// ------------------------------------------------------------------ commands

async function handle(line: string): Promise<void> {
  const [command, ...rest] = line.trim().split(" ");
  switch (command) {
    case "stats-start":
      statsStart();
      say("ok stats-start");
      return;
    case "stats-end":
      say(`stats ${JSON.stringify(statsEnd())}`);
      return;
    case "library-submit": {
      const run = await librarySubmit(rest[0] ?? "lib", Number(rest[1]), Number(rest[2]));
      say(`library-submit ${JSON.stringify(run)}`);
      return;
    }
    case "library-read": {
      const run = await libraryRead(Number(rest[0]), Number(rest[1]), rest[2] ?? "");
      say(`library-read ${JSON.stringify(run)}`);
      return;
    }
    case "fill":
      await fill(Number(rest[0]));
      say(`filled ${rest[0]}`);
      return;
    default:
      if (command) process.stderr.write(`unknown command: ${line}\n`);
  }
}

createInterface({ input: process.stdin }).on("line", (line) => {
  handle(line).catch((err: unknown) => {
    say(`error ${JSON.stringify(err instanceof Error ? err.message : String(err))}`);
  });
});
say(`ready ${process.pid} ${port}`);
