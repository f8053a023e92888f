/**
 * Parent side of test/helpers/worker-process.ts: starts worker processes on a test schema, collects the
 * events they print, waits for particular ones, and signals them (SIGKILL, SIGSTOP/SIGCONT, SIGTERM).
 * `killAll()` (for afterAll) leaves no child behind, frozen ones included.
 */
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";
import type { BuildQueueOptions } from "../../src/index.js";
import type { FileFixture } from "./file-fixture.js";
import { sql, TEST_DATABASE_URL } from "./postgres.js";
import { eventually, openTestQueue } from "./queue.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const script = path.join(here, "worker-process.ts");

export interface WorkerEvent {
  event: string;
  /** Parent's clock when the line arrived. */
  at: number;
  id?: string;
  lease?: number;
  retryCount?: number;
  running?: number;
  reason?: string;
  msg?: string;
  buildId?: string;
  [key: string]: unknown;
}

export interface WorkerProcessOptions {
  workerId: string;
  schema: string;
  prefix: string;
  redisUrl?: string;
  capacity?: number;
  /** Builds claimed ahead of free slots (WorkerOptions.prefetch). */
  prefetch?: number;
  drainMs?: number;
  heartbeatMs?: number;
  deadAfterMs?: number;
  reaperMs?: number;
  /** The worker's labels (routing). */
  labels?: Record<string, string>;
  /** WorkerOptions.abortWaitMs: also the grace of a wedged event loop past a build's timeout. */
  abortWaitMs?: number;
  /** WorkerOptions.exitWhenWedged false. */
  keepWhenWedged?: boolean;
}

const all = new Set<WorkerProcess>();

export class WorkerProcess {
  readonly events: WorkerEvent[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private frozen = false;

  private constructor(
    readonly workerId: string,
    private readonly child: ChildProcess,
  ) {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      try {
        this.events.push({ ...(JSON.parse(line) as WorkerEvent), at: Date.now() });
      } catch {
        this.stderr.push(`(stdout) ${line}`);
      }
    });
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (line) =>
      this.stderr.push(line),
    );
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.exit = { code, signal };
        all.delete(this);
        resolve(this.exit);
      });
    });
  }

  /** Starts the process and waits for its "ready" event. */
  static async start(options: WorkerProcessOptions, timeoutMs = 30_000): Promise<WorkerProcess> {
    const argv = [
      "--schema",
      options.schema,
      "--prefix",
      options.prefix,
      "--database-url",
      // Named, so that a test can tell which process holds what in PostgreSQL (pg_stat_activity).
      `${TEST_DATABASE_URL}${TEST_DATABASE_URL.includes("?") ? "&" : "?"}application_name=${encodeURIComponent(options.workerId)}`,
      "--worker-id",
      options.workerId,
      "--capacity",
      String(options.capacity ?? 1),
      "--heartbeat-ms",
      String(options.heartbeatMs ?? 200),
      "--dead-after-ms",
      String(options.deadAfterMs ?? 1500),
      "--reaper-ms",
      String(options.reaperMs ?? 200),
    ];
    if (options.redisUrl) argv.push("--redis-url", options.redisUrl);
    if (options.drainMs !== undefined) argv.push("--drain-ms", String(options.drainMs));
    if (options.prefetch !== undefined) argv.push("--prefetch", String(options.prefetch));
    if (options.labels) argv.push("--labels", JSON.stringify(options.labels));
    if (options.abortWaitMs !== undefined) argv.push("--abort-wait-ms", String(options.abortWaitMs));
    if (options.keepWhenWedged) argv.push("--keep-when-wedged");
    const child = spawn(process.execPath, ["--import", "tsx", script, ...argv], {
      cwd: root,
      stdio: ["pipe", "pipe", "pipe"],
    });
    const worker = new WorkerProcess(options.workerId, child);
    all.add(worker);
    await worker.waitFor((e) => e.event === "ready", timeoutMs, "ready");
    return worker;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  /** The event matching `match`, as soon as it has arrived. */
  async waitFor(
    match: (e: WorkerEvent) => boolean,
    timeoutMs = 20_000,
    what = "event",
  ): Promise<WorkerEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find(match);
      if (found) return found;
      if (Date.now() > deadline)
        throw new Error(`${this.workerId}: no ${what} in ${timeoutMs} ms\n${this.describe()}`);
      if (!this.running && !this.frozen) {
        // Lines may still be in the pipe just after the exit: one more look, then give up.
        await new Promise((r) => setTimeout(r, 100));
        const late = this.events.find(match);
        if (late) return late;
        throw new Error(`${this.workerId} exited before ${what}\n${this.describe()}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Events of one kind (and build). */
  eventsOf(kind: string, buildId?: string): WorkerEvent[] {
    return this.events.filter((e) => e.event === kind && (buildId === undefined || e.id === buildId));
  }

  /** kill -9; resolves once the process is gone. */
  async kill9(): Promise<void> {
    if (!this.running) return;
    this.child.kill("SIGKILL");
    await this.exited;
  }

  freeze(): void {
    this.frozen = true;
    this.child.kill("SIGSTOP");
  }

  thaw(): void {
    this.child.kill("SIGCONT");
    this.frozen = false;
  }

  /** SIGTERM, then waits for the exit (SIGKILL after `timeoutMs`). */
  async terminate(timeoutMs = 30_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.running) return this.exit ?? { code: null, signal: null };
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  describe(): string {
    const tail = this.events.slice(-25).map((e) => JSON.stringify(e));
    return `${this.workerId} (pid ${this.pid}, exit ${JSON.stringify(this.exit)}):\nevents:\n${tail.join("\n")}\nstderr:\n${this.stderr.slice(-20).join("\n")}`;
  }
}

/** For afterAll: every worker process started by this file, gone (a frozen one is thawed first). */
export async function killAllWorkers(): Promise<void> {
  await Promise.all(
    [...all].map(async (w) => {
      w.thaw();
      await w.kill9();
    }),
  );
}

export interface BuildRecord {
  id: string;
  status: string;
  lease: number;
  retry_count: number;
  worker_id: string | null;
  last_error: string | null;
  result: { worker?: string; lease?: number } | null;
  progress: { iteration?: number } | null;
}

export async function buildRecord(schema: string, id: string): Promise<BuildRecord> {
  const [row] = await sql<BuildRecord>(
    schema,
    `SELECT id, status, lease::int AS lease, retry_count, worker_id, last_error, result, progress
     FROM builds WHERE id = $1`,
    [id],
  );
  if (!row) throw new Error(`no build ${id}`);
  return row;
}

export interface EventRecord {
  type: string;
  actor: string;
  from_status: string | null;
  to_status: string | null;
  data: Record<string, unknown> | null;
}

/** A build's state-change events, in order (progress events left out). */
export async function buildEvents(schema: string, id: string): Promise<EventRecord[]> {
  return sql<EventRecord>(
    schema,
    "SELECT type, actor, from_status, to_status, data FROM build_events WHERE build_id = $1 AND type <> 'progress' ORDER BY id",
    [id],
  );
}

/**
 * The application_name (a worker id, for the worker processes) of the session holding the reaper's
 * advisory lock of `schema` right now, if any.
 */
export async function reaperLockHolder(schema: string): Promise<string | undefined> {
  const [row] = await sql<{ holder: string }>(
    schema,
    `SELECT a.application_name AS holder
     FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
       AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtext($1)::bigint`,
    [`oculus:reaper:${schema}`],
  );
  return row?.holder;
}

/**
 * A test queue in `mode` (on the file's redis-server, or on PostgreSQL alone), closed after the file,
 * and `start()`, which starts worker processes on its schema and Redis with the same `health`.
 */
export async function openFleetQueue(
  fixture: FileFixture,
  label: string,
  mode: "redis" | "postgres",
  health: { heartbeatMs: number; deadAfterMs: number },
  queueOptions: BuildQueueOptions = {},
) {
  const redisUrl = mode === "redis" ? fixture.server.url : undefined;
  const opened = await openTestQueue(label, { redisUrl, health, ...queueOptions });
  fixture.defer(opened.cleanup);
  expect(opened.queue.mode).toBe(mode);
  const start = (
    workerId: string,
    extra: Pick<
      WorkerProcessOptions,
      "capacity" | "prefetch" | "drainMs" | "reaperMs" | "labels" | "abortWaitMs" | "keepWhenWedged"
    > = {},
  ) =>
    WorkerProcess.start({
      workerId,
      schema: opened.schema,
      prefix: opened.prefix,
      redisUrl,
      ...health,
      ...extra,
    });
  return { ...opened, start };
}

/** The first "started" event of `buildId` on any of `workers`, with the worker that printed it. */
export async function firstStart(
  workers: WorkerProcess[],
  buildId: string,
  timeoutMs = 20_000,
): Promise<{ worker: WorkerProcess; event: WorkerEvent }> {
  return eventually(async () => {
    for (const worker of workers) {
      const event = worker.eventsOf("started", buildId)[0];
      if (event) return { worker, event };
    }
    return undefined;
  }, timeoutMs);
}

/** Resolves once the build has recorded progress up to `iteration`: it is mid-run. */
export async function progressAtLeast(schema: string, id: string, iteration: number): Promise<void> {
  await eventually(async () => ((await buildRecord(schema, id)).progress?.iteration ?? 0) >= iteration);
}

/** Waits for `worker` to finish the build, then for its record to say completed; returns the record. */
export async function completedBy(worker: WorkerProcess, schema: string, id: string): Promise<BuildRecord> {
  await worker.waitFor((e) => e.event === "finished" && e.id === id, 30_000, "finish");
  return eventually(async () => {
    const record = await buildRecord(schema, id);
    return record.status === "completed" && record;
  });
}

/**
 * Waits for the reaper to requeue the build; when it does not in `timeoutMs`, the error says where
 * the build is, and what `explain` adds.
 */
export async function requeuedWithin(
  schema: string,
  id: string,
  timeoutMs: number,
  explain: (record: BuildRecord) => Promise<string> | string,
): Promise<void> {
  await eventually(
    async () => (await buildEvents(schema, id)).some((e) => e.type === "requeued"),
    timeoutMs,
  ).catch(async (err: Error) => {
    const record = await buildRecord(schema, id);
    throw new Error(`${err.message}: ${record.status} by ${record.worker_id}${await explain(record)}`);
  });
}

/**
 * Worker health for the kill -9 tests: a dead-after that a busy machine cannot reach by a slow
 * heartbeat round trip alone (the survivor's fence, 80 % of it, must not stop its run while the
 * PostgreSQL heartbeat waits for CPU).
 */
export const KILL_TEST_HEALTH = { heartbeatMs: 200, deadAfterMs: 4000 };
/**
 * Params of a build of 6 s: long enough to be killed mid-run, whatever the load. Its rerun elsewhere
 * (retryCount > 0) takes half a second: the tests wait for it to complete, not to be killed.
 */
export const LONG_BUILD = { steps: 60, stepMs: 100, retrySteps: 5 };
