/**
 * The HTTP API under load (issue 5's benchmark): submit and read rates over HTTP against the library
 * calls they wrap, and SSE fan-out of progress to 1,000 `GET /v1/events` streams.
 *
 * The SERVER is the real one (`buildServer` + `listenApi`, as `oculus up` runs it) in a child process
 * (bench/http-server.ts, from the compiled dist/): auth on with one token (scopes submit+read, so
 * every request goes through the bearer check), rate limit off, request logging at info to a file
 * (summarized afterwards: statuses, warnings, errors, why streams ended), no workers. The load generator never shares its event loop:
 *
 * - **Submit:** autocannon (in this process) POSTs `{strategyId, params: {run, n}}` to /v1/builds
 *   over C keep-alive connections, one request in flight per connection (closed loop), for
 *   `seconds` after a warm-up run, on a fresh schema and server per measurement (in PostgreSQL-only
 *   mode the position returned by a submit is a count over the queue, so every measurement starts
 *   from an empty queue). Latency is autocannon's per-response time (request written -> response
 *   parsed), recorded at full resolution here (its own histogram keeps whole milliseconds).
 *   Afterwards every build of the run is read back from PostgreSQL: each 201's build id must be
 *   there (nothing lost), no request number may appear twice (nothing doubled), and the rows
 *   without a 201 must be the requests still in flight when autocannon stopped (it destroys its
 *   sockets at the end of the duration; the server may still commit those).
 * - **Library submit, side by side:** `queue.submit` with the same input, C loops back to back, in the
 *   server process on its own fresh schema (same queue options, same pool), so the difference is the
 *   HTTP layer: parsing, auth, zod validation, serialization, logging, loopback TCP.
 * - **Read:** GET /v1/builds/:id on random builds of a queue holding `readQueue` queued builds (the
 *   route reads the build and, queued, its position), and the library's `get` + `position` likewise.
 * - **SSE fan-out:** the progress producer of the library fan-out benchmark (bench/fanout-producer.ts,
 *   a third process: 100 running builds, 100 updates/s round-robin, send time in each update), the
 *   server child, and `sseConnections` streams on GET /v1/events opened by `sseClients` client
 *   processes (bench/http-sse-client.ts). Per delivery: receive time in the client - send time in
 *   the producer; every (stream, update) pair is checked for missing and duplicate deliveries. The
 *   server's CPU, event-loop utilization and RSS over the measured window.
 */
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import autocannon from "autocannon";
import { killChildren, LineChild } from "./child.js";
import { Producer } from "./fanout.js";
import type { ProducerReport } from "./fanout-producer.js";
import type { LibraryRun, LoopStats } from "./http-server.js";
import type { ClientReport } from "./http-sse-client.js";
import { DATABASE_URL, dropSchema, newSchema, withClient } from "./postgres.js";
import { cpuMs, rssBytes } from "./proc.js";
import type { PrivateRedis } from "./redis-server.js";
import { type Distribution, distribution, distributionOf, sleep } from "./stats.js";

export type HttpMode = "redis" | "postgres";
export const HTTP_MODES: readonly HttpMode[] = ["redis", "postgres"];
export type HttpSection = "submit" | "read" | "sse";
export const HTTP_SECTIONS: readonly HttpSection[] = ["submit", "read", "sse"];

/**
 * The server process over a window: CPU and RSS from /proc/<pid> (read by this process, on its
 * clock: exact even when the server's loop is saturated), event-loop utilization from the server.
 */
export interface ServerStats {
  wallMs: number;
  cpuMs: number;
  rssStartMiB: number;
  /** Highest RSS sampled every 200 ms over the window. */
  rssMaxMiB: number;
  rssEndMiB: number;
  /** From the server's own stats-start .. stats-end (late by as much as its loop was busy). */
  loop: LoopStats;
  /** The whole machine (/proc/stat): busy CPU over the window, in % of one core (all cores: 100 x cores). */
  machineCpuPct: number;
  /** This (the benchmark) process over the window: autocannon for submits and reads. */
  benchCpuMs: number;
}

export interface HttpOptions {
  modes: readonly HttpMode[];
  sections: readonly HttpSection[];
  /** Measured seconds per submit and read measurement. */
  seconds: number;
  /** Unmeasured run before each measurement (JIT, pools, connections). */
  warmupSeconds: number;
  /** Concurrencies: autocannon connections, and library loops. */
  connections: number[];
  /** Queued builds in the queue the read runs read from. */
  readQueue: number;
  sse: {
    connections: number;
    /** Client processes the connections are split over. */
    clients: number;
    seconds: number;
    warmupSeconds: number;
    /** Updates per second; one SSE measurement per rate. */
    rates: number[];
    builds: number;
    progressIntervalMs: number;
    /** After the last send: how long to wait for deliveries still on their way while they still come. */
    drainMs: number;
    /** ... and at most this long in all. */
    maxDrainMs: number;
  } | null;
  log: (line: string) => void;
}

/** Whether every build of a run is in PostgreSQL once, and only the answered ones. */
export interface SubmitCheck {
  /** Rows in PostgreSQL carrying the run's tag. */
  rows: number;
  /** 201 responses whose build id is not in PostgreSQL. */
  lost: number;
  /** Rows beyond the first carrying the same request number. */
  doubled: number;
  /** Rows whose request got no 201 (still in flight when the load generator stopped). */
  unanswered: number;
  ok: boolean;
}

export interface HttpRun {
  concurrency: number;
  durationSec: number;
  /** Requests written / responses read (autocannon's counts). */
  sent: number;
  answered: number;
  /** Responses by status code. */
  statuses: Record<string, number>;
  /** 2xx per second over the run (201 for submits, 200 for reads). */
  perSec: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  /** Requests written and not answered when the run stopped. */
  inFlightAtStop: number;
  /** Per response, request written -> response parsed. */
  ms: Distribution;
  server: ServerStats;
}

export interface SubmitResult {
  concurrency: number;
  http: HttpRun & { check: SubmitCheck; queuedAtEnd: number };
  library: LibraryRun & { server: ServerStats; check: SubmitCheck };
}

export interface ReadResult {
  concurrency: number;
  queued: number;
  http: HttpRun;
  library: LibraryRun & { server: ServerStats };
}

export interface SseResult {
  connections: number;
  clients: number;
  seconds: number;
  warmupSeconds: number;
  rate: number;
  builds: number;
  updates: number;
  achievedRatePerSec: number;
  expected: number;
  delivered: number;
  missing: number;
  duplicates: number;
  foreign: number;
  streamsMissing: number;
  streamsWithDuplicates: number;
  /** Streams that did not open, or that the server ended during the run. */
  failed: number;
  endedEarly: number;
  errors: string[];
  /** Every delivery: producer send -> receive in a client process. */
  ms: Distribution;
  /** Per update: send -> its first delivery on any stream. */
  firstMs: Distribution;
  /** Per update: first -> last delivery over all streams. */
  spreadMs: Distribution;
  /** From the producer's last settled call to the last delivery (or the end of the wait). */
  drainedMs: number;
  /** Measured deliveries received by the time the producer's last call settled. */
  deliveredBySendEnd: number;
  producer: ProducerReport;
  /** The server process while the streams were opened, and over the measured window. */
  serverAttach: ServerStats;
  server: ServerStats;
  clientProcesses: {
    cpuMs: number;
    wallMs: number;
    eventLoopUtilization: number;
    frames: number;
    bytes: number;
  }[];
  attachSec: number;
  /** GET /health every 250 ms over the measured window: how the API answers beside the streams. */
  health: { ms: Distribution; statuses: Record<string, number>; failures: number };
}

export interface HttpModeResult {
  submit: SubmitResult[];
  read: ReadResult[];
  sse: SseResult[];
  /** Each server child's log, summarized (warnings, errors, statuses, why streams ended). */
  serverLogs: ServerLog[];
  /** os.loadavg() (1, 5, 15 minutes) when the mode started and ended. */
  loadAverage: { start: number[]; end: number[] };
  durationSec: number;
}

export interface HttpPart {
  seconds: number;
  warmupSeconds: number;
  connections: number[];
  readQueue: number;
  loadGenerator: string;
  note: string;
  results: Partial<Record<HttpMode, HttpModeResult>>;
}

const TOKEN = "bench-http-token-0123456789abcdef";

// ------------------------------------------------------------------ child processes

const children = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** Kills every child of this part still running (the benchmark's cleanup, also on errors and SIGINT). */
export async function stopHttpChildren(): Promise<void> {
  await killChildren(children);
  // The run's temporary directory (server logs, ids, latency files), also on an interruption.
  if (logs.dir !== os.tmpdir()) rmSync(logs.dir, { recursive: true, force: true });
}

/** CPU time (ms) and RSS (bytes) of a process, from /proc (Linux). */
function procSample(pid: number): { cpuMs: number; rss: number } {
  return { cpuMs: cpuMs(pid), rss: rssBytes(pid) };
}

/** What a server child logged (its log file, read after it stopped). */
export interface ServerLog {
  label: string;
  lines: number;
  warnings: number;
  errors: number;
  /** Distinct warning and error messages, the first few. */
  messages: string[];
  /** "event stream ended" lines by reason (client went away, server shutting down, ...). */
  streamsEnded: Record<string, number>;
  /** Responses by status code, from Fastify's "request completed" lines. */
  statuses: Record<string, number>;
}

/** The log directory of the current run, and the summaries of the servers stopped so far. */
const logs: { dir: string; collected: ServerLog[] } = { dir: os.tmpdir(), collected: [] };

function readServerLog(label: string, file: string): ServerLog {
  const summary: ServerLog = {
    label,
    lines: 0,
    warnings: 0,
    errors: 0,
    messages: [],
    streamsEnded: {},
    statuses: {},
  };
  let text = "";
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return summary;
  }
  for (const line of text.split("\n")) {
    if (!line) continue;
    summary.lines += 1;
    let entry: {
      level?: number;
      msg?: string;
      reason?: string;
      res?: { statusCode?: number };
      err?: { message?: string };
    };
    try {
      entry = JSON.parse(line);
    } catch {
      continue;
    }
    const level = entry.level ?? 0;
    if (level >= 50) summary.errors += 1;
    else if (level >= 40) summary.warnings += 1;
    if (level >= 40) {
      const text = `${entry.msg ?? ""}${entry.err?.message ? `: ${entry.err.message}` : ""}`.slice(0, 300);
      if (summary.messages.length < 5 && !summary.messages.includes(text)) summary.messages.push(text);
    }
    if (entry.msg === "event stream ended") {
      const reason = entry.reason ?? "?";
      summary.streamsEnded[reason] = (summary.streamsEnded[reason] ?? 0) + 1;
    } else if (entry.msg === "request completed" && entry.res?.statusCode !== undefined) {
      const code = String(entry.res.statusCode);
      summary.statuses[code] = (summary.statuses[code] ?? 0) + 1;
    }
  }
  return summary;
}

/** Busy and total jiffies of the whole machine, from the first line of /proc/stat. */
function machineSample(): { busy: number; total: number } {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1);
  const values = fields.slice(0, 8).map(Number); // user nice system idle iowait irq softirq steal
  const total = values.reduce((a, b) => a + b, 0);
  const idle = (values[3] ?? 0) + (values[4] ?? 0);
  return { busy: total - idle, total };
}

class ServerChild {
  private window: {
    wall: number;
    machine: { busy: number; total: number };
    bench: NodeJS.CpuUsage;
    start: { cpuMs: number; rss: number };
    rssMax: number;
    sampler: NodeJS.Timeout;
  } | null = null;

  private constructor(
    readonly child: LineChild,
    readonly url: string,
    readonly pid: number,
    private readonly label: string,
    private readonly logFile: string,
  ) {}

  static async start(
    mode: HttpMode,
    schema: string,
    redis: PrivateRedis,
    log: (line: string) => void,
    label: string,
  ) {
    const logFile = path.join(logs.dir, `${schema}.log`);
    const args = ["--mode", mode, "--database-url", DATABASE_URL, "--schema", schema, "--token", TOKEN];
    args.push("--log-file", logFile);
    if (mode === "redis") args.push("--redis-url", redis.url);
    const child = new LineChild(`server ${mode}`, "http-server", args, log, children);
    try {
      const ready = (await child.next("ready", 60_000)).split(" ");
      return new ServerChild(child, `http://127.0.0.1:${ready[1]}`, Number(ready[0]), label, logFile);
    } catch (err) {
      await child.stop();
      throw err;
    }
  }

  /** Starts a window: /proc at once, the server's loop stats when it handles the command. */
  async statsStart(): Promise<void> {
    if (this.window) clearInterval(this.window.sampler);
    const start = procSample(this.pid);
    const w = {
      wall: performance.now(),
      machine: machineSample(),
      bench: process.cpuUsage(),
      start,
      rssMax: start.rss,
      sampler: setInterval(() => {
        w.rssMax = Math.max(w.rssMax, procSample(this.pid).rss);
      }, 200),
    };
    this.window = w;
    await this.child.ask("stats-start", "ok", 120_000);
  }

  async statsEnd(): Promise<ServerStats> {
    const w = this.window;
    if (!w) throw new Error("statsEnd without statsStart");
    this.window = null;
    clearInterval(w.sampler);
    const end = procSample(this.pid);
    const machine = machineSample();
    const bench = process.cpuUsage(w.bench);
    const wallMs = performance.now() - w.wall;
    const loop = JSON.parse(await this.child.ask("stats-end", "stats", 120_000)) as LoopStats;
    return {
      wallMs,
      cpuMs: end.cpuMs - w.start.cpuMs,
      rssStartMiB: w.start.rss / 2 ** 20,
      rssMaxMiB: Math.max(w.rssMax, end.rss) / 2 ** 20,
      rssEndMiB: end.rss / 2 ** 20,
      loop,
      machineCpuPct:
        ((machine.busy - w.machine.busy) / (machine.total - w.machine.total)) * 100 * os.cpus().length,
      benchCpuMs: (bench.user + bench.system) / 1000,
    };
  }

  async library(line: string, word: string, seconds: number): Promise<LibraryRun> {
    return JSON.parse(await this.child.ask(line, word, seconds * 1000 + 120_000)) as LibraryRun;
  }

  /** Stops the server (it closes its streams and its queue) and files the summary of its log. */
  async stop(): Promise<void> {
    if (this.window) clearInterval(this.window.sampler);
    this.window = null;
    await this.child.stop();
    logs.collected.push(readServerLog(this.label, this.logFile));
  }
}

// ------------------------------------------------------------------ PostgreSQL

/** Reads back every build tagged `tag` and checks it against the build ids the client got with 201. */
async function checkSubmits(schema: string, tag: string, answered: Set<string> | null): Promise<SubmitCheck> {
  const rows = await withClient(async (c) => {
    const res = await c.query<{ id: string; n: string }>(
      `SELECT id, params->>'n' AS n FROM "${schema}".builds WHERE params->>'run' = $1`,
      [tag],
    );
    return res.rows;
  });
  const ids = new Set(rows.map((r) => r.id));
  const numbers = new Set(rows.map((r) => r.n));
  const lost = answered ? [...answered].filter((id) => !ids.has(id)).length : 0;
  const unanswered = answered ? rows.filter((r) => !answered.has(r.id)).length : 0;
  const doubled = rows.length - numbers.size;
  return { rows: rows.length, lost, doubled, unanswered, ok: lost === 0 && doubled === 0 };
}

async function queuedCount(schema: string): Promise<number> {
  return withClient(async (c) => {
    const res = await c.query<{ n: number }>(
      `SELECT count(*)::integer AS n FROM "${schema}".builds WHERE status = 'queued'`,
    );
    return Number(res.rows[0]?.n ?? 0);
  });
}

async function sampleIds(schema: string, n: number): Promise<string[]> {
  return withClient(async (c) => {
    const res = await c.query<{ id: string }>(
      `SELECT id FROM "${schema}".builds ORDER BY random() LIMIT ${Number(n)}`,
    );
    return res.rows.map((r) => r.id);
  });
}

// ------------------------------------------------------------------ autocannon

interface CannonOptions {
  url: string;
  connections: number;
  seconds: number;
  method: "GET" | "POST";
  /** The request's path and body, per request (n counts from 0). */
  next: (n: number) => { path: string; body?: string };
  /** A 201 response's body (submits: the created build's id is collected). */
  onCreated?: (body: string) => void;
}

interface CannonRun {
  durationSec: number;
  sent: number;
  answered: number;
  statuses: Record<string, number>;
  non2xx: number;
  errors: number;
  timeouts: number;
  ms: Distribution;
}

function cannon(o: CannonOptions): Promise<CannonRun> {
  const times: number[] = [];
  let n = 0;
  const headers = {
    authorization: `Bearer ${TOKEN}`,
    ...(o.method === "POST" ? { "content-type": "application/json" } : {}),
  };
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: o.url,
        connections: o.connections,
        pipelining: 1,
        duration: o.seconds,
        timeout: 30,
        requests: [
          {
            method: o.method,
            headers,
            setupRequest: (request) => {
              const { path: p, body } = o.next(n++);
              return { ...request, path: p, ...(body === undefined ? {} : { body }) };
            },
            ...(o.onCreated
              ? {
                  onResponse: (status: number, body: string) => {
                    if (status === 201) o.onCreated?.(body);
                  },
                }
              : {}),
          },
        ],
      },
      (err, result) => {
        if (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        const statuses: Record<string, number> = {};
        for (const [code, s] of Object.entries(result.statusCodeStats ?? {})) statuses[code] = s.count ?? 0;
        resolve({
          durationSec: result.duration,
          sent: result.requests.sent,
          answered: Object.values(statuses).reduce((a, b) => a + b, 0),
          statuses,
          non2xx: result.non2xx,
          errors: result.errors,
          timeouts: result.timeouts,
          ms: distribution(times),
        });
      },
    );
    instance.on("response", (_client, _status, _bytes, responseTime) => {
      times.push(responseTime);
    });
  });
}

function toHttpRun(concurrency: number, run: CannonRun, okStatus: string, server: ServerStats): HttpRun {
  const ok = run.statuses[okStatus] ?? 0;
  return {
    concurrency,
    durationSec: run.durationSec,
    sent: run.sent,
    answered: run.answered,
    statuses: run.statuses,
    perSec: ok / run.durationSec,
    non2xx: run.non2xx,
    errors: run.errors,
    timeouts: run.timeouts,
    inFlightAtStop: Math.max(0, run.sent - run.answered - run.errors),
    ms: run.ms,
    server,
  };
}

function submitRequests(tag: string): (n: number) => { path: string; body: string } {
  return (n) => ({
    path: "/v1/builds",
    body: JSON.stringify({ strategyId: "bench-http", params: { run: tag, n } }),
  });
}

// ------------------------------------------------------------------ submit and read

async function httpSubmit(
  redis: PrivateRedis,
  mode: HttpMode,
  c: number,
  options: HttpOptions,
): Promise<SubmitResult["http"]> {
  const schema = newSchema(`http_${mode}`);
  const server = await ServerChild.start(mode, schema, redis, options.log, `HTTP submit c=${c}`);
  try {
    await cannon({
      url: server.url,
      connections: c,
      seconds: options.warmupSeconds,
      method: "POST",
      next: submitRequests("warmup"),
    });
    const tag = `http-c${c}`;
    const created = new Set<string>();
    await server.statsStart();
    const run = await cannon({
      url: server.url,
      connections: c,
      seconds: options.seconds,
      method: "POST",
      next: submitRequests(tag),
      onCreated: (body) => {
        const id = /"id":"([0-9a-f-]{36})"/.exec(body)?.[1];
        if (id) created.add(id);
      },
    });
    const stats = await server.statsEnd();
    // Let the server finish the requests autocannon abandoned at the end (their commits).
    await sleep(1000);
    const check = await checkSubmits(schema, tag, created);
    const created201 = run.statuses["201"] ?? 0;
    if (created.size !== created201) {
      options.log(`  note: ${created201} responses 201 but ${created.size} distinct build ids in them`);
      check.ok = false;
    }
    return { ...toHttpRun(c, run, "201", stats), check, queuedAtEnd: await queuedCount(schema) };
  } finally {
    await server.stop();
    await dropSchema(schema).catch(() => undefined);
  }
}

async function librarySubmit(
  redis: PrivateRedis,
  mode: HttpMode,
  c: number,
  options: HttpOptions,
): Promise<SubmitResult["library"]> {
  const schema = newSchema(`httplib_${mode}`);
  const server = await ServerChild.start(mode, schema, redis, options.log, `library submit c=${c}`);
  try {
    const warm = options.warmupSeconds;
    await server.library(`library-submit warmup ${c} ${warm}`, "library-submit", warm);
    const tag = `lib-c${c}`;
    await server.statsStart();
    const run = await server.library(
      `library-submit ${tag} ${c} ${options.seconds}`,
      "library-submit",
      options.seconds,
    );
    const stats = await server.statsEnd();
    const check = await checkSubmits(schema, tag, null);
    // Every call was awaited: the rows must be exactly the successful calls.
    check.unanswered = check.rows - run.calls;
    check.ok = check.ok && check.unanswered === 0;
    return { ...run, server: stats, check };
  } finally {
    await server.stop();
    await dropSchema(schema).catch(() => undefined);
  }
}

async function reads(
  redis: PrivateRedis,
  mode: HttpMode,
  options: HttpOptions,
  dir: string,
): Promise<ReadResult[]> {
  const schema = newSchema(`httpread_${mode}`);
  const server = await ServerChild.start(mode, schema, redis, options.log, "reads");
  const out: ReadResult[] = [];
  try {
    await server.child.ask(`fill ${options.readQueue}`, "filled", 300_000);
    const ids = await sampleIds(schema, 1000);
    const file = path.join(dir, `ids-${mode}.txt`);
    writeFileSync(file, `${ids.join("\n")}\n`);
    const queued = await queuedCount(schema);
    for (const c of options.connections) {
      const next = (n: number) => ({ path: `/v1/builds/${ids[n % ids.length]}` });
      await cannon({ url: server.url, connections: c, seconds: options.warmupSeconds, method: "GET", next });
      await server.statsStart();
      const run = await cannon({
        url: server.url,
        connections: c,
        seconds: options.seconds,
        method: "GET",
        next,
      });
      const httpStats = await server.statsEnd();
      const http = toHttpRun(c, run, "200", httpStats);
      options.log(
        `  read c=${c} http: ${Math.round(http.perSec)}/s, p50 ${http.ms.p50.toFixed(2)} ms, p99 ${http.ms.p99.toFixed(2)} ms, non-2xx ${http.non2xx}`,
      );
      const warm = options.warmupSeconds;
      await server.library(`library-read ${c} ${warm} ${file}`, "library-read", warm);
      await server.statsStart();
      const lib = await server.library(
        `library-read ${c} ${options.seconds} ${file}`,
        "library-read",
        options.seconds,
      );
      const libStats = await server.statsEnd();
      options.log(
        `  read c=${c} library: ${Math.round(lib.perSec)}/s, p50 ${lib.ms.p50.toFixed(2)} ms, p99 ${lib.ms.p99.toFixed(2)} ms, errors ${lib.errors}`,
      );
      out.push({ concurrency: c, queued, http, library: { ...lib, server: libStats } });
    }
    return out;
  } finally {
    await server.stop();
    await dropSchema(schema).catch(() => undefined);
  }
}

// ------------------------------------------------------------------ SSE fan-out

async function sse(
  redis: PrivateRedis,
  mode: HttpMode,
  o: NonNullable<HttpOptions["sse"]> & { rate: number },
  log: (line: string) => void,
  dir: string,
): Promise<SseResult> {
  const schema = newSchema(`httpsse_${mode}`);
  const total = Math.round((o.warmupSeconds + o.seconds) * o.rate);
  const measuredFrom = Math.round(o.warmupSeconds * o.rate);
  // The server first: it applies the migrations the producer (migrate: false) relies on.
  const server = await ServerChild.start(mode, schema, redis, log, `SSE ${o.rate}/s`);
  let producer: Producer | undefined;
  const clients: LineChild[] = [];
  try {
    const producerArgs = [
      ...["--system", mode, "--builds", String(o.builds), "--rate", String(o.rate)],
      ...["--warmup-seconds", String(o.warmupSeconds), "--seconds", String(o.seconds)],
      ...["--progress-interval-ms", String(o.progressIntervalMs)],
      ...["--database-url", DATABASE_URL, "--schema", schema],
      ...(mode === "redis" ? ["--redis-port", String(redis.port)] : []),
    ];
    producer = new Producer(producerArgs, log);
    const ids = (await producer.next("ready", 60_000)).split(" ")[1]?.split(",") ?? [];
    if (ids.length !== o.builds) throw new Error(`the producer reported ${ids.length} builds`);

    await server.statsStart();
    const attachStart = performance.now();
    const files: string[] = [];
    for (let k = 0; k < o.clients; k++) {
      const share = Math.floor(o.connections / o.clients) + (k < o.connections % o.clients ? 1 : 0);
      const file = path.join(dir, `sse-${mode}-${o.rate}-${k}.f64`);
      files.push(file);
      clients.push(
        new LineChild(
          `sse client ${k}`,
          "http-sse-client",
          [
            ...["--url", `${server.url}/v1/events`, "--token", TOKEN, "--connections", String(share)],
            ...["--total", String(total), "--measured-from", String(measuredFrom), "--out", file],
          ],
          log,
          children,
        ),
      );
    }
    const attachedLines = await Promise.all(clients.map((c) => c.next("attached", 180_000)));
    const attachSec = (performance.now() - attachStart) / 1000;
    const serverAttach = await server.statsEnd();
    const failedToOpen = attachedLines.reduce((a, line) => a + Number(line.split(" ")[1] ?? 0), 0);
    log(
      `  ${o.connections} streams attached in ${attachSec.toFixed(1)} s over ${o.clients} client process(es) (${failedToOpen} failed); server RSS ${serverAttach.rssEndMiB.toFixed(0)} MiB; ${o.warmupSeconds} s warm-up`,
    );

    producer.send("go");
    await producer.next("measuring", 30_000);
    await Promise.all([server.statsStart(), ...clients.map((c) => c.ask("mark", "ok", 10_000))]);
    log(`  measuring ${o.seconds} s`);
    const probe = probeHealth(server.url);
    const report = JSON.parse(
      await producer.next("done", (o.warmupSeconds + o.seconds) * 1000 + 60_000),
    ) as ProducerReport;
    // statsEnd reads /proc before its first await: the window ends here, whatever the server's loop does.
    const statsDone = server.statsEnd();
    const drainStart = performance.now();
    const poll = async () => {
      const statuses = await Promise.all(clients.map((c) => c.ask("status", "status", 10_000)));
      return statuses.reduce(
        ([a, b], line) => {
          const [x, y] = line.split(" ").map(Number);
          return [a + (x ?? 0), b + (y ?? 0)] as [number, number];
        },
        [0, 0] as [number, number],
      );
    };
    const [deliveredBySendEnd] = await poll();
    const stats = await statsDone;
    const health = await probe.stop();
    // Wait while deliveries still come (a saturated server is behind), up to maxDrainMs.
    let drainedMs = 0;
    let last = -1;
    let lastChange = performance.now();
    for (;;) {
      const [got, due] = await poll();
      const t = performance.now();
      if (got !== last) {
        last = got;
        lastChange = t;
        drainedMs = t - drainStart;
      }
      if (got >= due || t - lastChange > o.drainMs || t - drainStart > o.maxDrainMs) break;
      await sleep(50);
    }
    const reports = (await Promise.all(clients.map((c) => c.ask("finish", "done", 60_000)))).map(
      (line) => JSON.parse(line) as ClientReport,
    );
    const parts = files.map((f) => {
      const buf = readFileSync(f);
      return new Float64Array(buf.buffer, buf.byteOffset, buf.byteLength / 8);
    });
    const all = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
    let offset = 0;
    for (const p of parts) {
      all.set(p, offset);
      offset += p.length;
    }
    const first: number[] = [];
    const spread: number[] = [];
    for (let seq = measuredFrom; seq < total; seq++) {
      let sent = Number.NaN;
      let lo = Number.POSITIVE_INFINITY;
      let hi = Number.NEGATIVE_INFINITY;
      for (const r of reports) {
        sent = Number.isNaN(sent) ? (r.sentAt[seq] ?? Number.NaN) : sent;
        lo = Math.min(lo, r.firstAt[seq] ?? Number.POSITIVE_INFINITY);
        hi = Math.max(hi, r.lastAt[seq] ?? Number.NEGATIVE_INFINITY);
      }
      if (Number.isNaN(sent) || !Number.isFinite(lo)) continue;
      first.push(lo - sent);
      spread.push(hi - lo);
    }
    const sum = (f: (r: ClientReport) => number) => reports.reduce((a, r) => a + f(r), 0);
    return {
      connections: o.connections,
      clients: o.clients,
      seconds: o.seconds,
      warmupSeconds: o.warmupSeconds,
      rate: o.rate,
      builds: o.builds,
      updates: report.sent,
      achievedRatePerSec:
        report.sendWindowMs > 0 ? ((report.sent - 1) / report.sendWindowMs) * 1000 : Number.NaN,
      expected: sum((r) => r.expected),
      delivered: sum((r) => r.delivered),
      missing: sum((r) => r.missing),
      duplicates: sum((r) => r.duplicates),
      foreign: sum((r) => r.foreign),
      streamsMissing: sum((r) => r.streamsMissing),
      streamsWithDuplicates: sum((r) => r.streamsWithDuplicates),
      failed: sum((r) => r.failed),
      endedEarly: sum((r) => r.endedEarly),
      errors: reports.flatMap((r) => r.errors).slice(0, 10),
      ms: distributionOf(all),
      firstMs: distribution(first),
      spreadMs: distribution(spread),
      drainedMs,
      deliveredBySendEnd,
      producer: report,
      serverAttach,
      server: stats,
      clientProcesses: reports.map((r) => ({
        cpuMs: r.cpuMs,
        wallMs: r.wallMs,
        eventLoopUtilization: r.eventLoopUtilization,
        frames: r.frames,
        bytes: r.bytes,
      })),
      attachSec,
      health,
    };
  } finally {
    await Promise.all(clients.map((c) => c.stop(3000)));
    await producer?.stop().catch(() => undefined);
    await server.stop();
    await dropSchema(schema).catch(() => undefined);
  }
}

/** GET /health every 250 ms (one at a time) until stop(): the API's answer time beside the streams. */
function probeHealth(url: string): { stop: () => Promise<SseResult["health"]> } {
  const times: number[] = [];
  const statuses: Record<string, number> = {};
  let failures = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      try {
        const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(30_000) });
        await res.arrayBuffer();
        times.push(performance.now() - t0);
        statuses[String(res.status)] = (statuses[String(res.status)] ?? 0) + 1;
      } catch {
        failures += 1;
      }
      await sleep(250);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { ms: distribution(times), statuses, failures };
    },
  };
}

// ------------------------------------------------------------------ the part

const f2 = (n: number) => n.toFixed(2);

export async function runHttp(redis: PrivateRedis, options: HttpOptions): Promise<HttpPart> {
  const { log } = options;
  const dir = mkdtempSync(path.join(os.tmpdir(), "oculus-bench-http-"));
  logs.dir = dir;
  const results: Partial<Record<HttpMode, HttpModeResult>> = {};
  try {
    for (const mode of options.modes) {
      const started = performance.now();
      const loadStart = os.loadavg();
      logs.collected = [];
      log(`http: ${mode} mode (load average ${loadStart.map(f2).join("/")})`);
      await redis.flushAll();
      const submit: SubmitResult[] = [];
      for (const c of options.sections.includes("submit") ? options.connections : []) {
        const http = await httpSubmit(redis, mode, c, options);
        log(
          `  submit c=${c} http: ${Math.round(http.perSec)}/s, p50 ${f2(http.ms.p50)} ms, p99 ${f2(http.ms.p99)} ms, non-2xx ${http.non2xx}, errors ${http.errors}; PostgreSQL ${http.check.rows} rows = ${http.statuses["201"] ?? 0} x 201 + ${http.check.unanswered} unanswered (in flight at stop ${http.inFlightAtStop}), lost ${http.check.lost}, doubled ${http.check.doubled}; server CPU ${Math.round((http.server.cpuMs / http.server.wallMs) * 100)} %`,
        );
        await redis.flushAll();
        const library = await librarySubmit(redis, mode, c, options);
        log(
          `  submit c=${c} library: ${Math.round(library.perSec)}/s, p50 ${f2(library.ms.p50)} ms, p99 ${f2(library.ms.p99)} ms, errors ${library.errors}; PostgreSQL ${library.check.rows} rows for ${library.calls} calls; CPU ${Math.round((library.server.cpuMs / library.server.wallMs) * 100)} %`,
        );
        await redis.flushAll();
        submit.push({ concurrency: c, http, library });
      }
      const read = options.sections.includes("read") ? await reads(redis, mode, options, dir) : [];
      await redis.flushAll();
      const sseResults: SseResult[] = [];
      for (const rate of options.sse && options.sections.includes("sse") ? options.sse.rates : []) {
        const o = { ...(options.sse as NonNullable<HttpOptions["sse"]>), rate };
        log(
          `  sse: ${o.connections} GET /v1/events streams, ${rate} updates/s from a producer process, ${o.seconds} s measured`,
        );
        const s = await sse(redis, mode, o, log, dir);
        sseResults.push(s);
        const clientCpu = s.clientProcesses.map((c) => `${Math.round((c.cpuMs / c.wallMs) * 100)} %`);
        log(
          `  sse ${rate}/s: p50 ${f2(s.ms.p50)} ms, p99 ${f2(s.ms.p99)} ms, max ${f2(s.ms.max)} ms; delivered ${s.delivered}/${s.expected} (missing ${s.missing}, duplicates ${s.duplicates}, ended early ${s.endedEarly}); server CPU ${Math.round((s.server.cpuMs / s.server.wallMs) * 100)} %, loop ${Math.round(s.server.loop.eventLoopUtilization * 100)} %, RSS max ${s.server.rssMaxMiB.toFixed(0)} MiB; clients CPU ${clientCpu.join(", ")}; /health p50 ${f2(s.health.ms.p50)} ms, max ${f2(s.health.ms.max)} ms`,
        );
        await redis.flushAll();
      }
      const loadEnd = os.loadavg();
      results[mode] = {
        submit,
        read,
        sse: sseResults,
        serverLogs: logs.collected,
        loadAverage: { start: loadStart, end: loadEnd },
        durationSec: (performance.now() - started) / 1000,
      };
    }
  } finally {
    await stopHttpChildren();
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    seconds: options.seconds,
    warmupSeconds: options.warmupSeconds,
    connections: options.connections,
    readQueue: options.readQueue,
    loadGenerator: "autocannon 9 in the benchmark process (submit, read); SSE: node:http client processes",
    note:
      "server = buildServer + listenApi in a child process (auth on: one bearer token with scopes submit+read; rate limit off; " +
      "request logging at info to a file; reaper on; no workers); library = the same calls on the same queue options in that process, no HTTP; " +
      "SSE latency = receive in a client process - send time in the producer process (timeOrigin + performance.now(), same machine)",
    results,
  };
}
