/**
 * The worker's heartbeat, in a thread of its own, so that a handler that computes without yielding
 * (a CPU-bound build in the worker's process) cannot make its worker look dead. The thread has its
 * own connections; every interval it beats to Redis and PostgreSQL (which extends the leases of the
 * worker's builds) and posts the builds PostgreSQL says the worker holds back to the main thread,
 * which abandons any build taken from it (as soon as its event loop is free again).
 *
 * It is also the worker's watchdog (wedge.ts): a main thread blocked past a build's timeout, by the
 * grace a timed-out handler has to end, can no longer stop that build; the thread then ends the
 * process, unless the worker was told to keep it.
 */
import { writeSync } from "node:fs";
import { type MessagePort, parentPort, workerData } from "node:worker_threads";
import { silentLogger } from "../core/logger.js";
import type { PostgresSettings } from "../core/postgres-settings.js";
import { openPostgres } from "../postgres/db.js";
import { type HeldStatus, WorkerStore } from "../postgres/worker-store.js";
import { connectRedis, RedisIndex } from "../redis/index-client.js";
import { monotonicMs } from "./monotonic.js";
import { WedgeWatch } from "./wedge.js";

export interface HeartbeatThreadData {
  databaseUrl: string;
  schema: string;
  redisUrl: string | undefined;
  prefix: string;
  workerId: string;
  heartbeatMs: number;
  deadAfterMs: number;
  /** The queue's PostgreSQL timeouts (the thread's connection gets the same bounds). */
  postgres?: PostgresSettings;
  /** Where the answers go: a channel of their own, so that the main thread can also take them
   * synchronously (receiveMessageOnPort) when its event loop was busy (heartbeats.ts). */
  answers: MessagePort;
  /** Ends the process when the main thread stays blocked this long past a build's timeout; absent: never. */
  wedgeGraceMs?: number;
}

type Held = { id: string; lease: number }[];

/**
 * Thread to main: the answer to a heartbeat (the builds it named, those PostgreSQL let it keep, and
 * whether each was asked to stop), with when it was sent (monotonicMs: the leases it extended run
 * from a moment after that).
 */
export type HeartbeatMessage =
  | { type: "held"; asked: Held; held: HeldStatus[]; sentAt: number }
  | { type: "error"; message: string };

/**
 * Main to thread: the builds the worker runs now; a build's timeout (its deadline on monotonicMs,
 * absent once it ended); the main thread's event loop ran at `at` (posted every heartbeat
 * interval); or stop.
 */
export type HeartbeatCommand =
  | { type: "running"; builds: Held }
  | { type: "deadline"; id: string; at?: number }
  | { type: "alive"; at: number }
  | { type: "stop" };

async function main(data: HeartbeatThreadData): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error("heartbeat-thread must run as a worker thread");
  const { answers } = data;
  // Its own connection, with the same timeouts, keepalive and error handling as the queue's pool.
  const db = await openPostgres(data.databaseUrl, data.schema, silentLogger(), {
    ...data.postgres,
    poolSize: 1,
    applicationName: "oculus-heartbeat",
  });
  const store = new WorkerStore(db);
  const redis = data.redisUrl ? connectRedis(data.redisUrl) : undefined;
  redis?.on("error", () => undefined);
  await redis?.connect().catch(() => undefined);
  const index = redis ? new RedisIndex(redis, data.prefix) : undefined;

  let running: Held = [];
  const wedge =
    data.wedgeGraceMs === undefined ? undefined : new WedgeWatch(data.wedgeGraceMs, data.heartbeatMs);
  let redisBeat: Promise<void> | undefined;
  const beat = async () => {
    if (wedge) endIfWedged(wedge, data.workerId);
    const asked = running;
    // The Redis heartbeat goes on beside the PostgreSQL one, never before it: a Redis that is hung or
    // failing over holds a command for its timeout (2 s; longer through a Cluster's retries), and the
    // PostgreSQL heartbeat is the one that extends the leases and that the lease fence measures: made
    // to wait, it let the fence stop (and the reaper take back) the builds of a live worker. One Redis
    // heartbeat at a time, so that a stalled Redis does not pile them up.
    if (index && !redisBeat) {
      redisBeat = index
        .workerHeartbeat(data.workerId)
        .catch(() => undefined)
        .finally(() => {
          redisBeat = undefined;
        });
    }
    const sentAt = monotonicMs();
    try {
      const held = await store.heartbeat(data.workerId, data.deadAfterMs, asked);
      answers.postMessage({ type: "held", asked, held, sentAt } satisfies HeartbeatMessage);
    } catch (err) {
      answers.postMessage({ type: "error", message: (err as Error).message } satisfies HeartbeatMessage);
    }
  };
  void beat(); // at once: a new worker shows as active without waiting an interval
  const timer = setInterval(() => void beat(), data.heartbeatMs);
  port.on("message", async (command: HeartbeatCommand) => {
    if (command.type === "running") {
      running = command.builds;
      return;
    }
    if (command.type === "deadline") {
      wedge?.deadline(command.id, command.at);
      return;
    }
    if (command.type === "alive") {
      wedge?.alive(command.at);
      return;
    }
    clearInterval(timer);
    redis?.disconnect();
    await db.close().catch(() => undefined);
    answers.close();
    port.close();
  });
}

/**
 * The main thread is wedged past a build's timeout: one fatal log line straight to stderr (the
 * process's streams are the main thread's, which cannot write), then SIGKILL. Its builds' leases
 * lapse and the reaper takes them back, as after a kill -9: nothing runs twice, nothing is held
 * forever. SIGKILL, because the worker handles SIGTERM on the blocked event loop.
 */
function endIfWedged(wedge: WedgeWatch, workerId: string): void {
  const found = wedge.wedged(monotonicMs());
  if (!found) return;
  const line = {
    level: 60,
    time: Date.now(),
    pid: process.pid,
    workerId,
    buildId: found.id,
    blockedMs: Math.round(found.blockedMs),
    pastTimeoutMs: Math.round(found.pastTimeoutMs),
    msg: "worker wedged: its event loop has been blocked past a build's timeout and the grace to end it; killing the process so that the reaper takes its builds back",
  };
  try {
    writeSync(2, `${JSON.stringify(line)}\n`);
  } finally {
    process.kill(process.pid, "SIGKILL");
  }
}

void main(workerData as HeartbeatThreadData);
