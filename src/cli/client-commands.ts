/**
 * The CLI client commands: they talk to a running `oculus up` over its HTTP API (`--url` /
 * OCULUS_URL, `--token` / OCULUS_TOKEN), print tables for people and `--json` for scripts.
 * Exit codes: 0 done; 1 the API refused or could not be reached (the message says why); 2 bad usage;
 * `watch`: 0 only if the build completed, 1 if it failed or was stopped.
 */
import { readFileSync } from "node:fs";
import { type Command, Option } from "commander";
import { printable, printableLines } from "../core/printable.js";
import { ApiClient, ApiError, DEFAULT_API_URL, reconnectNote } from "./api-client.js";
import { parseLabels } from "./flags.js";

interface ClientFlags {
  url?: string;
  token?: string;
  json?: boolean;
}

interface ApiBuild {
  id: string;
  strategyId: string;
  status: string;
  phase: string | null;
  progress: Progress | null;
  priority: number;
  workerId: string | null;
  retryCount: number;
  maxRetries: number;
  lastError: string | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  stoppedBy: string | null;
  stopReason: string | null;
  /** Absent from servers older than routing. */
  requires?: Record<string, string>;
  /** Absent from servers older than concurrency keys. */
  concurrencyKey?: string | null;
  held?: boolean;
  /** In `status` (GET /v1/builds/:id) only. */
  result?: unknown;
  logTail?: string | null;
}

/** Lines of output `oculus status` shows. */
const STATUS_TAIL_LINES = 20;

/** A result on one line, cut at 500 characters. */
function resultText(result: unknown): string {
  if (result === undefined || result === null) return "-";
  const text = JSON.stringify(result);
  return text.length > 500 ? `${text.slice(0, 500)}...` : text;
}

interface Progress {
  phase?: string;
  percent?: number;
  iteration?: number;
  maxIterations?: number;
  message?: string;
}

const FINAL = new Set(["completed", "failed", "stopped"]);

/** The commands registered here: main.ts loads nothing else for them (fast start-up). */
export const CLIENT_COMMANDS = [
  "submit",
  "status",
  "queue",
  "workers",
  "stop",
  "retry",
  "builds",
  "logs",
  "watch",
  "schedule",
  "limits",
];

/** A queued build held back by its concurrency key's limit (GET /v1/builds/:id, /v1/queue). */
interface WaitingOn {
  concurrencyKey: string;
  running: number;
  limit: number;
}

interface ApiLimit {
  key: string;
  limit: number;
  running: number;
  admitted: number;
  waiting: number;
  updatedAt: string | null;
}

const waitingText = (w: WaitingOn) =>
  `waiting on concurrency key ${w.concurrencyKey} (${w.running} running, limit ${w.limit})`;

export function registerClientCommands(program: Command): void {
  const withClient = (command: Command) =>
    command
      .addOption(new Option("--url <url>", "the Oculus API").env("OCULUS_URL").default(DEFAULT_API_URL))
      .addOption(
        new Option("--token <token>", "bearer token (scopes read, submit, admin)").env("OCULUS_TOKEN"),
      )
      .option("--json", "print JSON (for scripts)");

  withClient(program.command("submit").description("submit a build"))
    .requiredOption("--strategy <id>", "strategy id")
    .option("--priority <n>", "priority, -1000..1000 (higher runs first)", intArg("--priority"))
    .option("--params <json>", "build parameters: a JSON object, or @file.json")
    .option("--max-retries <n>", "automatic retries after a failure", intArg("--max-retries"))
    .option("--idempotency-key <key>", "a repeat with the same key returns the first build")
    .option(
      "--require <key=value...>",
      "a worker label the build needs (repeatable): only such workers run it",
    )
    .option("--timeout <seconds>", "the build fails as timed out past this run time", intArg("--timeout"))
    .option(
      "--concurrency-key <key>",
      "at most the key's limit (default 1: oculus limits set KEY N) of builds with this key run at once",
    )
    .option("--supersede", "latest wins: stop the still-queued builds of the same strategy")
    .action(async (opts: ClientFlags & SubmitFlags) => {
      const body = {
        strategyId: opts.strategy,
        ...(opts.priority === undefined ? {} : { priority: opts.priority }),
        ...(opts.params === undefined ? {} : { params: parseParams(opts.params) }),
        ...(opts.maxRetries === undefined ? {} : { maxRetries: opts.maxRetries }),
        ...(opts.idempotencyKey === undefined ? {} : { idempotencyKey: opts.idempotencyKey }),
        ...(opts.require === undefined ? {} : { requires: parseLabels(opts.require, "--require") }),
        ...(opts.timeout === undefined ? {} : { timeoutSeconds: opts.timeout }),
        ...(opts.concurrencyKey === undefined ? {} : { concurrencyKey: opts.concurrencyKey }),
        ...(opts.supersede ? { supersede: true } : {}),
      };
      const res = await client(opts).post<{
        build: ApiBuild;
        position: number | null;
        etaSeconds?: number | null;
        waitingOn?: WaitingOn | null;
        superseded?: string[];
      }>("/v1/builds", body);
      if (opts.json) {
        printJson(res);
        return;
      }
      const eta = res.etaSeconds == null ? "" : `  eta ${etaText(res.etaSeconds)}`;
      const waiting = res.waitingOn ? `  ${waitingText(res.waitingOn)}` : "";
      say(
        `${res.build.id}  ${res.build.status}${res.position ? `  position ${res.position}` : ""}${eta}${waiting}`,
      );
      for (const id of res.superseded ?? []) say(`superseded ${id} (stopped)`);
    });

  registerScheduleCommands(program, withClient);

  withClient(program.command("status").description("show a build").argument("<id>", "build id")).action(
    async (id: string, opts: ClientFlags) => {
      const res = await client(opts).get<{
        build: ApiBuild;
        position: number | null;
        etaSeconds?: number | null;
        waitingOn?: WaitingOn | null;
      }>(`/v1/builds/${encodeURIComponent(id)}`);
      if (opts.json) {
        printJson(res);
        return;
      }
      printBuild(res.build, res.position, res.etaSeconds ?? null, res.waitingOn ?? null);
    },
  );

  withClient(
    program.command("queue").description("the queue: waiting builds, running builds, workers"),
  ).action(async (opts: ClientFlags) => {
    const res = await client(opts).get<QueueOverview>("/v1/queue");
    if (opts.json) {
      printJson(res);
      return;
    }
    printQueue(res);
  });

  withClient(program.command("workers").description("the workers and their load")).action(
    async (opts: ClientFlags) => {
      const res = await client(opts).get<{ workers: ApiWorker[] }>("/v1/workers");
      if (opts.json) {
        printJson(res);
        return;
      }
      printWorkers(res.workers);
    },
  );

  withClient(program.command("stop").description("stop a build").argument("<id>", "build id"))
    .option("--reason <text>", "why (recorded with the build)")
    .action(async (id: string, opts: ClientFlags & { reason?: string }) => {
      const res = await client(opts).post<{ build: ApiBuild }>(
        `/v1/builds/${encodeURIComponent(id)}/stop`,
        opts.reason === undefined ? {} : { reason: opts.reason },
      );
      if (opts.json) {
        printJson(res);
        return;
      }
      const how = res.build.status === "stopping" ? "stopping (its worker is told)" : res.build.status;
      say(`${res.build.id}  ${how}`);
    });

  withClient(
    program.command("retry").description("run a failed or stopped build again").argument("<id>", "build id"),
  ).action(async (id: string, opts: ClientFlags) => {
    const res = await client(opts).post<{ build: ApiBuild }>(
      `/v1/builds/${encodeURIComponent(id)}/retry`,
      {},
    );
    if (opts.json) {
      printJson(res);
      return;
    }
    say(`${res.build.id}  ${res.build.status}`);
  });

  withClient(
    program
      .command("builds")
      .description("list builds, newest first (finished ones too)")
      .option("--status <status>", "only builds in this status (queued, running, completed, failed, ...)")
      .option("--strategy <id>", "only builds of this strategy")
      .option("--limit <n>", "at most this many (1..1000, default 20)", intArg("--limit")),
  ).action(async (opts: ClientFlags & { status?: string; strategy?: string; limit?: number }) => {
    const query = new URLSearchParams();
    if (opts.status) query.set("status", opts.status);
    if (opts.strategy) query.set("strategyId", opts.strategy);
    query.set("limit", String(opts.limit ?? 20));
    const res = await client(opts).get<{ builds: ApiBuild[]; nextCursor: string | null }>(
      `/v1/builds?${query.toString()}`,
    );
    if (opts.json) {
      printJson(res);
      return;
    }
    printBuildList(res.builds);
  });

  withClient(
    program
      .command("logs")
      .description("print a build's whole log (stdout and stderr); --follow: live until the build ends")
      .argument("<id>", "build id")
      .option("--follow", "keep printing new output until the build ends")
      .option("--raw", "print control characters as they are (colours), not escaped"),
  ).action(async (id: string, opts: ClientFlags & { follow?: boolean; raw?: boolean }) => {
    const api = client(opts);
    const show = (text: string) => process.stdout.write(opts.raw ? text : printableLog(text));
    const offset = await printLog(api, id, show);
    if (opts.follow) await followLog(api, id, offset, show);
  });

  const limits = program
    .command("limits")
    .description("concurrency limits: at most N builds of a concurrency key run at once (default 1)");
  withClient(limits.command("list").description("the concurrency keys: limit, running and waiting builds"))
    .option("--limit <n>", "at most this many keys (1..1000, default 100)", intArg("--limit"))
    .option("--after <key>", "the keys after this one (the last key of the previous page)")
    .action(async (opts: ClientFlags & { limit?: number; after?: string }) => {
      const query = new URLSearchParams({ limit: String(opts.limit ?? 100) });
      if (opts.after !== undefined) query.set("after", opts.after);
      const res = await client(opts).get<{ limits: ApiLimit[]; nextAfter: string | null }>(
        `/v1/limits?${query.toString()}`,
      );
      if (opts.json) {
        printJson(res);
        return;
      }
      printLimits(res.limits);
      if (res.nextAfter !== null) say(`more: oculus limits list --after ${JSON.stringify(res.nextAfter)}`);
    });
  withClient(
    limits
      .command("set")
      .description("set how many builds of KEY may run at once (raising it starts waiting builds)")
      .argument("<key>", "the concurrency key")
      .argument("<n>", "the limit, a positive integer"),
  ).action(async (key: string, n: string, opts: ClientFlags) => {
    const limit = intArg("N")(n);
    const res = await client(opts).put<{ limit: ApiLimit }>(`/v1/limits/${encodeURIComponent(key)}`, {
      limit,
    });
    if (opts.json) {
      printJson(res);
      return;
    }
    const l = res.limit;
    say(`${l.key}  limit ${l.limit}  (${l.running} running, ${l.admitted} admitted, ${l.waiting} waiting)`);
  });

  withClient(
    program
      .command("watch")
      .description("follow a build live until it ends (exit 0 only if it completed)")
      .argument("<id>", "build id"),
  ).action(async (id: string, opts: ClientFlags) => {
    const status = await watch(client(opts), id, Boolean(opts.json));
    process.exitCode = status === "completed" ? 0 : 1;
  });
}

interface SubmitFlags {
  strategy: string;
  priority?: number;
  params?: string;
  maxRetries?: number;
  idempotencyKey?: string;
  require?: string[];
  timeout?: number;
  concurrencyKey?: string;
  supersede?: boolean;
}

function printLimits(limits: ApiLimit[]): void {
  if (limits.length === 0) {
    console.log("no concurrency keys");
    return;
  }
  printTable(
    ["KEY", "LIMIT", "RUNNING", "ADMITTED", "WAITING"],
    limits.map((l) => [l.key, String(l.limit), String(l.running), String(l.admitted), String(l.waiting)]),
  );
}

function client(opts: ClientFlags): ApiClient {
  return new ApiClient({ url: opts.url ?? DEFAULT_API_URL, token: opts.token });
}

/** Follows the build's event stream; resolves with its final status. */
async function watch(api: ApiClient, id: string, json: boolean): Promise<string> {
  const view = new WatchView(json);
  let final = "";
  await api.stream(
    `/v1/builds/${encodeURIComponent(id)}/events`,
    (message) => {
      const data = JSON.parse(message.data) as WatchItem;
      view.show(message.event ?? "message", data);
      const status = data.kind === "snapshot" ? data.build?.status : data.status;
      if (status && FINAL.has(status) && (data.kind === "snapshot" || data.type !== "progress")) {
        final = status;
        return true;
      }
      return false;
    },
    { onReconnect: (_attempt, reason) => view.note(reconnectNote(reason)) },
  );
  view.end(final);
  return final;
}

export interface WatchItem {
  kind: "snapshot" | "event";
  id: string;
  type?: string;
  status?: string;
  actor?: string;
  progress?: Progress;
  data?: Record<string, unknown> | null;
  build?: ApiBuild;
}

/** A progress bar on a terminal; one line per event otherwise (or JSON lines). */
class WatchView {
  private readonly tty = Boolean(process.stdout.isTTY);
  private barShown = false;

  constructor(private readonly json: boolean) {}

  show(name: string, item: WatchItem): void {
    if (this.json) {
      printJsonLine({ event: name, ...item });
      return;
    }
    if (item.kind === "snapshot" && item.build) {
      const b = item.build;
      this.line(`build ${b.id} (${b.strategyId}): ${b.status}${b.workerId ? ` on ${b.workerId}` : ""}`);
      if (b.progress) this.progress(b.progress);
      return;
    }
    if (item.type === "progress" && item.progress) {
      this.progress(item.progress);
      return;
    }
    const { detail, more } = describeEvent(item);
    this.line(`${new Date().toISOString().slice(11, 19)} ${item.type}${detail ? `: ${detail}` : ""}`);
    for (const line of more) this.line(`    ${line}`);
  }

  note(text: string): void {
    if (!this.json) this.line(text);
  }

  end(status: string): void {
    if (this.json) return;
    this.clearBar();
    say(status === "completed" ? "completed" : `ended ${status || "without an outcome"}`);
  }

  private progress(p: Progress): void {
    const text = progressText(p);
    if (!this.tty) {
      this.line(text);
      return;
    }
    process.stdout.write(`\r\x1b[2K${printable(text)}`);
    this.barShown = true;
  }

  private line(text: string): void {
    this.clearBar();
    say(text);
  }

  private clearBar(): void {
    if (this.barShown) process.stdout.write("\r\x1b[2K");
    this.barShown = false;
  }
}

export function progressText(p: Progress): string {
  const width = 30;
  const percent =
    p.percent ?? (p.iteration && p.maxIterations ? (100 * p.iteration) / p.maxIterations : undefined);
  const parts: string[] = [];
  if (percent !== undefined) {
    const filled = Math.round((Math.max(0, Math.min(100, percent)) / 100) * width);
    parts.push(`[${"#".repeat(filled)}${".".repeat(width - filled)}] ${percent.toFixed(0).padStart(3)}%`);
  }
  if (p.phase) parts.push(p.phase);
  if (p.iteration !== undefined)
    parts.push(`iteration ${p.iteration}${p.maxIterations ? `/${p.maxIterations}` : ""}`);
  if (p.message) parts.push(p.message);
  return parts.join("  ");
}

/**
 * An event's detail on one line: who, why, retry count, then the error's first line. An error may
 * carry the build's last output on further lines ("--- last output ---"): those follow, indented,
 * so nothing is glued onto the last of them.
 */
export function describeEvent(item: WatchItem): { detail: string; more: string[] } {
  const data = item.data ?? {};
  const bits: string[] = [];
  if (item.actor) bits.push(`by ${item.actor}`);
  for (const key of ["reason", "retryCount"]) {
    if (data[key] !== undefined && data[key] !== null) bits.push(`${key} ${String(data[key])}`);
  }
  const error = data.error === undefined || data.error === null ? "" : String(data.error);
  const [firstLine, ...more] = error.split("\n");
  if (firstLine) bits.push(`error ${firstLine}`);
  return { detail: bits.join(", "), more };
}

interface ApiWorker {
  id: string;
  hostname: string;
  status: string;
  capacity: number;
  activeBuilds: number;
  freeSlots: number;
  heartbeatAgeMs: number;
}

interface QueueOverview {
  mode: string;
  length: number;
  queued: { build: ApiBuild; position: number | null; waitingOn?: WaitingOn | null }[] | ApiBuild[];
  active: ApiBuild[];
  workers: ApiWorker[];
  [key: string]: unknown;
}

function printQueue(q: QueueOverview): void {
  say(`mode ${q.mode}, ${q.length} queued`);
  const queued = (q.queued ?? []).map((entry) =>
    "build" in entry
      ? { ...entry.build, position: entry.position, waitingOn: entry.waitingOn ?? null }
      : { ...entry, position: null, waitingOn: null },
  );
  const keyed = queued.some((b) => b.concurrencyKey);
  if (queued.length > 0) {
    console.log("");
    console.log("queued");
    // KEY only when a build shown has a concurrency key ("held": waiting on the key's limit).
    printTable(
      ["POS", "ID", "STRATEGY", "PRIORITY", "WAITING", ...(keyed ? ["KEY"] : [])],
      queued.map((b) => [
        String(b.position ?? "-"),
        b.id,
        b.strategyId,
        String(b.priority),
        age(b.createdAt),
        ...(keyed ? [b.concurrencyKey ? `${b.concurrencyKey}${b.waitingOn ? " (held)" : ""}` : "-"] : []),
      ]),
    );
  }
  if ((q.active ?? []).length > 0) {
    console.log("");
    console.log("running");
    printTable(
      ["ID", "STATUS", "WORKER", "PHASE", "PROGRESS"],
      q.active.map((b) => [
        b.id,
        b.status,
        b.workerId ?? "-",
        b.phase ?? "-",
        b.progress ? progressText(b.progress) : "-",
      ]),
    );
  }
  console.log("");
  printWorkers(q.workers ?? []);
}

function printWorkers(workers: ApiWorker[]): void {
  if (workers.length === 0) {
    console.log("no workers");
    return;
  }
  printTable(
    ["WORKER", "STATUS", "RUNNING", "CAPACITY", "FREE", "HEARTBEAT"],
    workers.map((w) => [
      w.id,
      w.status,
      String(w.activeBuilds),
      String(w.capacity),
      String(w.freeSlots),
      `${(w.heartbeatAgeMs / 1000).toFixed(1)} s ago`,
    ]),
  );
}

/** Prints the log from its start, page by page; resolves with the byte offset reached. */
async function printLog(api: ApiClient, id: string, show: (text: string) => void): Promise<number> {
  const decoder = new TextDecoder();
  let offset = 0;
  for (;;) {
    const page = await api.getBytes(`/v1/builds/${encodeURIComponent(id)}/logs?offset=${offset}`);
    if (page.body.length === 0) break;
    show(decoder.decode(page.body, { stream: true }));
    offset += page.body.length;
  }
  show(decoder.decode());
  return offset;
}

/** The live log from `offset` (SSE, resumed by byte offset after a dropped connection) until the end. */
async function followLog(api: ApiClient, id: string, offset: number, show: (text: string) => void) {
  let status = "";
  await api.stream(`/v1/builds/${encodeURIComponent(id)}/logs/stream?offset=${offset}`, (message) => {
    const data = JSON.parse(message.data) as { text?: string; status?: string };
    if (message.event === "end") {
      status = data.status ?? "";
      return true;
    }
    if (data.text) show(data.text);
    return false;
  });
  console.error(`build ${status || "ended"}`);
}

/** Build output for a terminal: each line with its control characters escaped, line breaks kept. */
function printableLog(text: string): string {
  return printableLines(text);
}

function printBuildList(builds: ApiBuild[]): void {
  if (builds.length === 0) {
    console.log("no builds");
    return;
  }
  printTable(
    ["ID", "STRATEGY", "STATUS", "PRIORITY", "CREATED", "FINISHED"],
    builds.map((b) => [b.id, b.strategyId, b.status, String(b.priority), b.createdAt, b.finishedAt ?? "-"]),
  );
}

/** An ETA in words: "45 s", "12 min", "3.5 h". */
function etaText(seconds: number): string {
  if (seconds < 120) return `${seconds} s`;
  return seconds < 7200 ? `${Math.round(seconds / 60)} min` : `${(seconds / 3600).toFixed(1)} h`;
}

function printBuild(
  b: ApiBuild,
  position: number | null,
  etaSeconds: number | null = null,
  waitingOn: WaitingOn | null = null,
): void {
  const where = position
    ? ` (position ${position}${etaSeconds === null ? "" : `, eta ${etaText(etaSeconds)}`})`
    : waitingOn
      ? ` (${waitingText(waitingOn)})`
      : "";
  const rows: [string, string][] = [
    ["id", b.id],
    ["strategy", b.strategyId],
    ["status", b.status + where],
    ["priority", String(b.priority)],
    ...(Object.keys(b.requires ?? {}).length > 0
      ? [
          [
            "requires",
            Object.entries(b.requires ?? {})
              .map(([k, v]) => `${k}=${v}`)
              .join(" "),
          ] as [string, string],
        ]
      : []),
    ...(b.concurrencyKey ? [["concurrency key", b.concurrencyKey] as [string, string]] : []),
    ["phase", b.phase ?? "-"],
    ["progress", b.progress ? progressText(b.progress) : "-"],
    ["worker", b.workerId ?? "-"],
    ["retries", `${b.retryCount} of ${b.maxRetries}`],
    ["created", b.createdAt],
    ["started", b.startedAt ?? "-"],
    ["finished", b.finishedAt ?? "-"],
  ];
  if (b.lastError) rows.push(["error", b.lastError]);
  if (b.stoppedBy) {
    // A stop that came while the build was finishing its work does not change how it ended.
    const label = b.status === "stopped" ? "stopped by" : "stop asked by";
    const late =
      b.status === "completed" || b.status === "failed" ? ` (the build had ${b.status} first)` : "";
    rows.push([label, `${b.stoppedBy}${b.stopReason ? `: ${b.stopReason}` : ""}${late}`]);
  }
  if (b.status === "completed") rows.push(["result", resultText(b.result)]);
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${printable(v)}`);
  const tail = (b.logTail ?? "").split("\n").filter((line, i, all) => line !== "" || i < all.length - 1);
  if (tail.length > 0) {
    const last = tail.slice(-STATUS_TAIL_LINES);
    console.log("");
    console.log(`output (last ${last.length} line(s); all of it: oculus logs ${b.id})`);
    for (const line of last) console.log(`  ${printable(line)}`);
  }
}

function printTable(header: string[], cells: string[][]): void {
  const rows = cells.map((row) => row.map(printable));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const format = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  console.log(format(header));
  for (const row of rows) console.log(format(row));
}

function age(iso: string): string {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 120) return `${seconds.toFixed(0)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(0)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

/** One line of human output: user text in it is shown with control characters escaped. */
function say(text: string): void {
  console.log(printable(text));
}

function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}

function printJsonLine(value: unknown): void {
  console.log(JSON.stringify(value));
}

function parseParams(text: string): unknown {
  const source = text.startsWith("@") ? readParamsFile(text.slice(1)) : text;
  try {
    return JSON.parse(source);
  } catch (err) {
    throw new UsageError(`--params: not valid JSON (${(err as Error).message})`);
  }
}

function readParamsFile(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new UsageError(`--params: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`);
  }
}

// ---------------------------------------------------------------- oculus schedule

interface ApiSchedule {
  name: string;
  cron: string;
  timezone: string;
  strategyId: string;
  priority: number;
  requires: Record<string, string>;
  concurrencyKey: string | null;
  paused: boolean;
  nextTickAt: string | null;
  nextTickLocal: string | null;
  lastTickAt: string | null;
  lastBuildId: string | null;
  lastMissed: number;
  lastError: string | null;
}

interface ScheduleFlags extends ClientFlags {
  cron: string;
  strategy: string;
  timezone?: string;
  params?: string;
  priority?: number;
  requires?: string[];
  maxRetries?: number;
  timeout?: number;
  concurrencyKey?: string;
  paused?: boolean;
}

/** `oculus schedule add|update|list|show|pause|resume|remove`: /v1/schedules. */
function registerScheduleCommands(program: Command, withClient: (command: Command) => Command): void {
  const schedule = program
    .command("schedule")
    .description("recurring schedules: each tick of a cron expression submits one build");
  const definitionFlags = (command: Command) =>
    command
      .requiredOption("--cron <expr>", "cron expression: 5 fields, 6 with seconds first, or @daily, ...")
      .requiredOption("--strategy <id>", "strategy id of each tick's build")
      .option("--timezone <tz>", 'IANA time zone the expression is read in (default "UTC")')
      .option("--params <json>", "build parameters: a JSON object, or @file.json")
      .option("--priority <n>", "priority of each build, -1000..1000", intArg("--priority"))
      .option("--requires <key=value...>", "a worker label each build needs (repeatable)")
      .option("--max-retries <n>", "automatic retries of each build (default 3)", intArg("--max-retries"))
      .option("--timeout <seconds>", "each build fails as timed out past this run time", intArg("--timeout"))
      .option(
        "--concurrency-key <key>",
        "each build's concurrency key: a tick waits while the key is at its limit (oculus limits set)",
      )
      .option("--paused", "created paused (no builds until `oculus schedule resume`)");

  withClient(
    definitionFlags(
      schedule.command("add").description("create a schedule").argument("<name>", "schedule name"),
    ),
  ).action(async (name: string, opts: ScheduleFlags) => {
    const res = await scheduleCall(() =>
      client(opts).post<{ schedule: ApiSchedule }>("/v1/schedules", { name, ...scheduleBody(opts) }),
    );
    printScheduleChange(res.schedule, "added", opts);
  });

  withClient(
    definitionFlags(
      schedule
        .command("update")
        .description(
          "replace a schedule's definition (flags not given take their defaults; paused or not stays as it is without --paused)",
        )
        .argument("<name>", "schedule name"),
    ),
  ).action(async (name: string, opts: ScheduleFlags) => {
    const res = await scheduleCall(() =>
      client(opts).put<{ schedule: ApiSchedule }>(
        `/v1/schedules/${encodeURIComponent(name)}`,
        scheduleBody(opts),
      ),
    );
    printScheduleChange(res.schedule, "updated", opts);
  });

  withClient(
    schedule.command("list").description("the schedules, with their next tick (their zone and UTC)"),
  ).action(async (opts: ClientFlags) => {
    const res = await client(opts).get<{ schedules: ApiSchedule[] }>("/v1/schedules");
    if (opts.json) {
      printJson(res);
      return;
    }
    printSchedules(res.schedules);
  });

  withClient(schedule.command("show").description("one schedule").argument("<name>", "schedule name")).action(
    async (name: string, opts: ClientFlags) => {
      const res = await scheduleCall(() =>
        client(opts).get<{ schedule: ApiSchedule }>(`/v1/schedules/${encodeURIComponent(name)}`),
      );
      if (opts.json) printJson(res);
      else printSchedules([res.schedule]);
    },
  );

  for (const [action, what] of [
    ["pause", "stop submitting builds until resumed (ticks meanwhile are skipped)"],
    ["resume", "submit again, from the first tick after now"],
    ["remove", "delete a schedule (its builds stay)"],
  ] as const) {
    withClient(schedule.command(action).description(what).argument("<name>", "schedule name")).action(
      async (name: string, opts: ClientFlags) => {
        const path = `/v1/schedules/${encodeURIComponent(name)}`;
        const api = client(opts);
        const res = await scheduleCall(() =>
          action === "remove"
            ? api.delete<{ schedule: ApiSchedule }>(path)
            : api.post<{ schedule: ApiSchedule }>(`${path}/${action}`, {}),
        );
        if (opts.json) printJson(res);
        else
          say(
            `schedule ${res.schedule.name} ${action === "remove" ? "removed" : `${action}d`}${nextTickText(res.schedule)}`,
          );
      },
    );
  }
}

function scheduleBody(opts: ScheduleFlags) {
  return {
    cron: opts.cron,
    strategyId: opts.strategy,
    ...(opts.timezone === undefined ? {} : { timezone: opts.timezone }),
    ...(opts.params === undefined ? {} : { params: parseParams(opts.params) }),
    ...(opts.priority === undefined ? {} : { priority: opts.priority }),
    ...(opts.requires === undefined ? {} : { requires: parseLabels(opts.requires, "--requires") }),
    ...(opts.maxRetries === undefined ? {} : { maxRetries: opts.maxRetries }),
    ...(opts.timeout === undefined ? {} : { timeoutSeconds: opts.timeout }),
    ...(opts.concurrencyKey === undefined ? {} : { concurrencyKey: opts.concurrencyKey }),
    ...(opts.paused ? { paused: true } : {}),
  };
}

/** A schedule the API refused as invalid (400: a bad expression, zone, name) is bad usage: exit 2. */
async function scheduleCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof ApiError && err.status === 400) throw new UsageError(err.message);
    throw err;
  }
}

function nextTickText(s: ApiSchedule): string {
  if (s.paused || !s.nextTickAt) return "; paused";
  return `; next tick ${s.nextTickLocal ?? "-"} (${s.nextTickAt})`;
}

function printScheduleChange(s: ApiSchedule, verb: string, opts: ScheduleFlags): void {
  if (opts.json) {
    printJson({ schedule: s });
    return;
  }
  const zone = opts.timezone === undefined ? `${s.timezone} (the default; --timezone to change)` : s.timezone;
  say(`schedule ${s.name} ${verb}: "${s.cron}" in ${zone}, strategy ${s.strategyId}${nextTickText(s)}`);
}

function printSchedules(schedules: ApiSchedule[]): void {
  if (schedules.length === 0) {
    console.log("no schedules");
    return;
  }
  printTable(
    [
      "NAME",
      "CRON",
      "TIMEZONE",
      "STRATEGY",
      "STATE",
      "NEXT TICK (ZONE)",
      "NEXT TICK (UTC)",
      "LAST TICK (UTC)",
      "LAST BUILD",
    ],
    schedules.map((s) => [
      s.name,
      s.cron,
      s.timezone,
      s.strategyId,
      (s.paused ? (s.lastError ? "paused (error)" : "paused") : "active") +
        (s.concurrencyKey ? `, key ${s.concurrencyKey}` : ""),
      s.nextTickLocal ?? "-",
      s.nextTickAt ?? "-",
      s.lastTickAt ? `${s.lastTickAt}${s.lastMissed > 0 ? ` (${s.lastMissed} missed)` : ""}` : "-",
      s.lastBuildId ?? "-",
    ]),
  );
  for (const s of schedules) if (s.lastError) say(`${s.name}: ${s.lastError}`);
}

/** Bad usage: exit code 2. */
export class UsageError extends Error {}

function intArg(flag: string) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n)) throw new UsageError(`${flag} must be an integer, got "${value}"`);
    return n;
  };
}
