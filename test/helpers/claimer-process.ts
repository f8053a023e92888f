/**
 * A claimer PROCESS for the exactly-once tests (run by test/helpers/claimers.ts as
 * `node --import tsx test/helpers/claimer-process.ts`). It opens a BuildQueue on the schema, prefix,
 * PostgreSQL and (optional) Redis given in its environment, then claims in a loop (random batches of
 * 1..20), completes every claimed build with its lease, and reports on stdout, one JSON object a line:
 *   {"type":"ready","mode":...}               opened
 *   {"type":"mode","mode":...}                the queue switched mode
 *   {"type":"claimed","id":...,"lease":...,"mode":...}   before completing it
 *   {"type":"completed","id":...}
 *   {"type":"error","op":...,"message":...,"code":...}   any caller-visible error
 *   {"type":"closed"}                         closed cleanly, about to exit 0
 * It stops when a line "stop" arrives on stdin (or stdin ends: the parent died).
 *
 * Environment: CLAIMER_WORKER_ID, CLAIMER_SCHEMA, CLAIMER_PREFIX, CLAIMER_DATABASE_URL,
 * CLAIMER_REDIS_URL (absent or empty: PostgreSQL only).
 */
import { createInterface } from "node:readline";
import { BuildQueue } from "../../src/index.js";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
}

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

const workerId = env("CLAIMER_WORKER_ID");
const redisUrl = process.env.CLAIMER_REDIS_URL || undefined;

const queue = await BuildQueue.open({
  databaseUrl: env("CLAIMER_DATABASE_URL"),
  redisUrl,
  schema: env("CLAIMER_SCHEMA"),
  prefix: env("CLAIMER_PREFIX"),
  reconcileIntervalMs: 500,
  migrate: false,
  poolSize: 4,
});
queue.on("mode", (mode: string) => emit({ type: "mode", mode }));

let stopping = false;
const stopped = new AbortController();
const stop = () => {
  stopping = true;
  stopped.abort();
};
createInterface({ input: process.stdin })
  .on("line", (line) => {
    if (line.trim() === "stop") stop();
  })
  .on("close", stop);

emit({ type: "ready", mode: queue.mode, pid: process.pid });

const report = (op: string, err: unknown) => {
  const e = err as { message?: string; code?: string };
  emit({ type: "error", op, message: String(e?.message ?? err), code: e?.code ?? null });
};

while (!stopping) {
  const want = 1 + Math.floor(Math.random() * 20);
  let claimed: Awaited<ReturnType<BuildQueue["claim"]>> = [];
  try {
    claimed = await queue.claim(workerId, want);
  } catch (err) {
    report("claim", err);
    await queue.waitForWork(100, stopped.signal);
    continue;
  }
  if (claimed.length === 0) {
    await queue.waitForWork(100, stopped.signal);
    continue;
  }
  const mode = queue.mode;
  for (const build of claimed) emit({ type: "claimed", id: build.id, lease: build.lease, mode });
  await Promise.all(
    claimed.map(async (build) => {
      try {
        await queue.complete(build.id, build.lease, { worker: workerId });
        emit({ type: "completed", id: build.id });
      } catch (err) {
        report("complete", err);
      }
    }),
  );
}

await queue.close();
emit({ type: "closed" });
process.exit(0);
