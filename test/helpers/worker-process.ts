/**
 * A worker PROCESS for the worker-fleet fault tests (started by test/helpers/worker-fleet.ts as
 * `node --import tsx test/helpers/worker-process.ts --schema ... --worker-id ...`). It opens a
 * BuildQueue, starts a Worker and runs the reaper (every --reaper-ms, default 200 ms), and reports on
 * stdout, one JSON object a line:
 *   {"event":"ready","workerId":...,"pid":...,"mode":...}
 *   {"event":"started","id":...,"lease":...,"retryCount":...,"running":n}   handler entered (n: handlers
 *                                                                            running in this process now)
 *   {"event":"progress-refused","id":...,"lease":...}   ctx.progress threw StaleLeaseError
 *   {"event":"progress-error","id":...,"message":...}   ctx.progress threw something else
 *   {"event":"signal-aborted","id":...,"reason":...}    the handler saw its signal abort (first time)
 *   {"event":"abandoned","id":...,"reason":...}          the handler gave up (it throws)
 *   {"event":"finished","id":...,"lease":...,"running":n} the handler returned (its result goes to complete())
 *   {"event":"log","level":...,"msg":...,"buildId":...}  the queue's and worker's warnings
 *   {"event":"stopping"} / {"event":"stopped"}           SIGTERM: worker.stop(), queue.close(), exit 0
 *
 * The handler runs `params.steps` steps (`params.retrySteps` on a retry, if given) of `params.stepMs` each, reporting
 * progress({phase: "training", iteration: i, maxIterations: steps}) after each step, and stops early
 * (throws) when its signal aborts or its progress is refused. With `params.ignoreAbort: true` it is an
 * uncooperative handler: it notes the abort and the refusals but runs to the end and returns a result
 * (so that the worker tries to complete the build with its stale lease); `"first-run"`: only on the
 * build's first run (retryCount 0). With `params.wedgeMs` (on the first run only) it first blocks the
 * event loop that long without yielding (-1: forever), as a handler stuck in a computation.
 *
 * Arguments: --schema --prefix --database-url [--redis-url] --worker-id [--capacity 1] [--prefetch 0] [--drain-ms]
 * [--heartbeat-ms 200] [--dead-after-ms 1500] [--reaper-ms 200] [--labels '{"gpu":"true"}'] [--abort-wait-ms]
 * [--keep-when-wedged] (WorkerOptions.exitWhenWedged false). The schema must exist (migrated).
 * The process exits when its stdin closes (the parent died), so no orphan outlives a crashed test.
 */
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { BuildQueue, StaleLeaseError } from "../../src/index.js";
import { Worker } from "../../src/worker/worker.js";

const { values: args } = parseArgs({
  options: {
    schema: { type: "string" },
    prefix: { type: "string" },
    "database-url": { type: "string" },
    "redis-url": { type: "string" },
    "worker-id": { type: "string" },
    capacity: { type: "string", default: "1" },
    prefetch: { type: "string", default: "0" },
    "drain-ms": { type: "string" },
    "heartbeat-ms": { type: "string", default: "200" },
    "dead-after-ms": { type: "string", default: "1500" },
    "reaper-ms": { type: "string", default: "200" },
    labels: { type: "string", default: "{}" },
    "abort-wait-ms": { type: "string" },
    "keep-when-wedged": { type: "boolean", default: false },
  },
});

function required(name: keyof typeof args): string {
  const value = args[name];
  if (typeof value !== "string" || !value) throw new Error(`--${name} is required`);
  return value;
}

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

const workerId = required("worker-id");

// Warnings of the queue and the worker (result refused, abandoning, drain timeout, reaper) become
// events, so that the parent can see them in order with the handler's.
const logStream = new Writable({
  write(chunk: Buffer, _encoding, done) {
    for (const line of chunk.toString().split("\n")) {
      if (!line) continue;
      try {
        const entry = JSON.parse(line) as { level: number; msg: string; buildId?: string; why?: string };
        emit({ event: "log", level: entry.level, msg: entry.msg, buildId: entry.buildId, why: entry.why });
      } catch {
        process.stderr.write(`${line}\n`);
      }
    }
    done();
  },
});
const logger = pino({ level: "warn" }, logStream);

const queue = await BuildQueue.open({
  databaseUrl: required("database-url"),
  redisUrl: args["redis-url"] || undefined,
  schema: required("schema"),
  prefix: required("prefix"),
  reconcileIntervalMs: 500,
  migrate: false,
  poolSize: 4,
  logger,
  health: { heartbeatMs: Number(args["heartbeat-ms"]), deadAfterMs: Number(args["dead-after-ms"]) },
});

let running = 0;

const worker = new Worker(queue, {
  id: workerId,
  capacity: Number(args.capacity),
  prefetch: args.prefetch === "auto" ? "auto" : Number(args.prefetch),
  labels: JSON.parse(args.labels ?? "{}") as Record<string, string>,
  drainMs: args["drain-ms"] ? Number(args["drain-ms"]) : undefined,
  abortWaitMs: args["abort-wait-ms"] ? Number(args["abort-wait-ms"]) : undefined,
  exitWhenWedged: !args["keep-when-wedged"],
  logger,
  handler: async (ctx) => {
    const { id, params, retryCount } = ctx.build;
    const steps = Number((retryCount > 0 ? params.retrySteps : undefined) ?? params.steps ?? 1);
    const stepMs = Number(params.stepMs ?? 100);
    const ignoreAbort =
      params.ignoreAbort === true || (params.ignoreAbort === "first-run" && retryCount === 0);
    running += 1;
    emit({ event: "started", id, lease: ctx.lease, retryCount, running });
    const wedgeMs = retryCount === 0 && params.wedgeMs !== undefined ? Number(params.wedgeMs) : 0;
    if (wedgeMs !== 0) {
      emit({ event: "wedging", id });
      const until = wedgeMs < 0 ? Number.POSITIVE_INFINITY : Date.now() + wedgeMs;
      let x = 0;
      while (Date.now() < until) x += Math.sqrt(x + 1); // no await: the event loop is stuck here
      emit({ event: "unwedged", id, x: x > 0 });
    }
    let sawAbort = false;
    const noteAbort = () => {
      if (sawAbort || !ctx.signal.aborted) return;
      sawAbort = true;
      emit({ event: "signal-aborted", id, reason: String((ctx.signal.reason as Error)?.message) });
    };
    try {
      for (let i = 1; i <= steps; i++) {
        await sleep(stepMs, undefined, ignoreAbort ? {} : { signal: ctx.signal }).catch(() => undefined);
        noteAbort();
        if (ctx.signal.aborted && !ignoreAbort) {
          const reason = String((ctx.signal.reason as Error)?.message);
          emit({ event: "abandoned", id, reason });
          throw new Error(`abandoned at step ${i}: ${reason}`);
        }
        try {
          await ctx.progress({ phase: "training", iteration: i, maxIterations: steps });
        } catch (err) {
          if (err instanceof StaleLeaseError) {
            emit({ event: "progress-refused", id, lease: ctx.lease });
            noteAbort();
            if (!ignoreAbort) {
              emit({ event: "abandoned", id, reason: "progress refused" });
              throw err;
            }
          } else {
            emit({ event: "progress-error", id, message: (err as Error).message });
          }
        }
      }
      emit({ event: "finished", id, lease: ctx.lease, running });
      return { worker: workerId, lease: ctx.lease };
    } finally {
      running -= 1;
    }
  },
});

await worker.start();
queue.startReaper(Number(args["reaper-ms"]));
emit({ event: "ready", workerId, pid: process.pid, mode: queue.mode });

let stopping = false;
process.on("SIGTERM", () => {
  if (stopping) return;
  stopping = true;
  emit({ event: "stopping" });
  void (async () => {
    await worker.stop();
    await queue.close();
    emit({ event: "stopped" });
    process.exit(0);
  })();
});
process.stdin.resume();
process.stdin.on("close", () => process.exit(1));
