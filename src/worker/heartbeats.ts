/**
 * The worker's heartbeats: in a thread of their own (heartbeat-thread.ts) when the queue is on a
 * PostgreSQL server, so that a handler computing for seconds without yielding cannot make its worker
 * look dead; on the event loop with the embedded store (one process, one connection), while the
 * thread is loading, or when it fails.
 *
 * Each heartbeat names the builds the worker holds (id and lease); PostgreSQL extends their leases
 * and answers which it still lets the worker hold. Every answer goes to `onAnswer` with the moment
 * the heartbeat was sent (monotonicMs), which is what the lease fence (fence.ts) measures from.
 */
import {
  MessageChannel,
  type MessagePort,
  receiveMessageOnPort,
  Worker as Thread,
} from "node:worker_threads";
import { postgresSettingsOf } from "../core/config.js";
import type { Logger } from "../core/logger.js";
import type { HeldStatus } from "../postgres/worker-store.js";
import type { BuildQueue } from "../queue/build-queue.js";
import type { HeartbeatCommand, HeartbeatMessage, HeartbeatThreadData } from "./heartbeat-thread.js";
import { monotonicMs } from "./monotonic.js";

export interface BuildRef {
  id: string;
  lease: number;
}

/** A heartbeat PostgreSQL answered: the builds it named, those still held, and when it was sent. */
export interface HeartbeatAnswer {
  asked: BuildRef[];
  held: HeldStatus[];
  sentAt: number;
}

/** The heartbeat thread's entry: the built .js next to this file, or the .ts source under tests. */
function threadEntry(): string {
  const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
  return new URL(`./heartbeat-thread${ext}`, import.meta.url).href;
}

/** How long start() waits for the first heartbeat's answer at most. */
const FIRST_ANSWER_WAIT_MS = 60_000;

export class Heartbeats {
  private timer: NodeJS.Timeout | undefined;
  private aliveTimer: NodeJS.Timeout | undefined;
  private thread: Thread | undefined;
  private answers: MessagePort | undefined;
  private lastAnswerAt: number | undefined;
  private firstAnswered: (() => void) | undefined;
  private threadAnswered: (() => void) | undefined;

  constructor(
    private readonly queue: BuildQueue,
    private readonly workerId: string,
    private readonly logger: Logger,
    /** The builds to name (and so keep), read at each heartbeat on the event loop. */
    private readonly builds: () => BuildRef[],
    private readonly onAnswer: (answer: HeartbeatAnswer) => void,
    /** The thread ends the process when the event loop stays blocked this long past a build's timeout (wedge.ts); undefined: never. */
    private readonly wedgeGraceMs?: number,
  ) {}

  /** Since the last heartbeat PostgreSQL answered, in ms (undefined before the first). */
  ageMs(): number | undefined {
    return this.lastAnswerAt === undefined ? undefined : monotonicMs() - this.lastAnswerAt;
  }

  /**
   * Starts beating; resolves once a heartbeat has been answered (or has failed): a worker claims
   * nothing before its heartbeats work. A thread takes a moment to load (seconds on a busy machine):
   * the event loop beats in its place until it answers, and start() waits for it up to the lease
   * duration, so that a handler that blocks the event loop at once finds the thread beating.
   */
  async start(): Promise<void> {
    const anyAnswer = new Promise<void>((resolve) => {
      this.firstAnswered = resolve;
    });
    const threadAnswer = new Promise<void>((resolve) => {
      this.threadAnswered = resolve;
    });
    this.beatOnEventLoop();
    const { databaseUrl } = this.queue.config;
    if (databaseUrl) this.startThread(databaseUrl);
    if (!(await within(anyAnswer, FIRST_ANSWER_WAIT_MS))) {
      this.logger.warn({ waitedMs: FIRST_ANSWER_WAIT_MS }, "no heartbeat answered yet; starting anyway");
    }
    if (databaseUrl) await within(threadAnswer, this.queue.workers.health.deadAfterMs);
  }

  /** The builds to name changed: the thread learns of it (the event loop reads `builds` each time). */
  buildsChanged(): void {
    this.thread?.postMessage({ type: "running", builds: this.builds() } satisfies HeartbeatCommand);
  }

  /**
   * A build's timeout comes due at `at` (monotonicMs), or the build ended (undefined): the thread
   * watches for an event loop blocked past it.
   */
  deadline(id: string, at: number | undefined): void {
    if (this.wedgeGraceMs === undefined) return; // no watchdog: the thread has no use for it
    this.thread?.postMessage({ type: "deadline", id, at } satisfies HeartbeatCommand);
  }

  /**
   * Handles, now, the answers the thread has posted that the event loop has not delivered yet. A
   * handler that kept the event loop busy can leave answers waiting behind a due timer: the fence
   * takes them first, so that it never stops a build for a silence that was only its own.
   */
  takePendingAnswers(): void {
    const port = this.answers;
    if (!port) return;
    for (let next = receiveMessageOnPort(port); next; next = receiveMessageOnPort(port)) {
      this.handleMessage(next.message as HeartbeatMessage);
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    clearInterval(this.aliveTimer);
    this.aliveTimer = undefined;
    const thread = this.thread;
    this.thread = undefined;
    if (!thread) return;
    thread.postMessage({ type: "stop" } satisfies HeartbeatCommand);
    await Promise.race([
      new Promise((resolve) => thread.once("exit", resolve)),
      new Promise((resolve) => setTimeout(resolve, 2000).unref()),
    ]);
    await thread.terminate();
    this.answers?.close();
    this.answers = undefined;
  }

  private startThread(databaseUrl: string): void {
    const { config } = this.queue;
    const health = this.queue.workers.health;
    const channel = new MessageChannel();
    const workerData: HeartbeatThreadData = {
      databaseUrl,
      schema: config.schema,
      redisUrl: config.redisUrl,
      prefix: config.prefix,
      workerId: this.workerId,
      heartbeatMs: health.heartbeatMs,
      deadAfterMs: health.deadAfterMs,
      postgres: postgresSettingsOf(config),
      answers: channel.port2,
      wedgeGraceMs: this.wedgeGraceMs,
    };
    const file = threadEntry();
    const transferList = [channel.port2];
    const thread = file.endsWith(".ts")
      ? // From the sources (tests): register the TypeScript loader in the thread, then load the entry.
        new Thread(
          `import("tsx/esm/api").then((m) => { m.register(); return import(${JSON.stringify(file)}); })`,
          { eval: true, workerData, transferList },
        )
      : new Thread(new URL(file), { workerData, transferList });
    channel.port1.on("message", (message: HeartbeatMessage) => this.handleMessage(message));
    thread.on("error", (err) => {
      this.logger.warn({ err: err.message }, "heartbeat thread failed; heartbeating on the event loop");
      this.thread = undefined;
      clearInterval(this.aliveTimer);
      channel.port1.close();
      this.answers = undefined;
      this.threadAnswered?.();
      if (!this.timer) this.beatOnEventLoop();
    });
    this.thread = thread;
    this.answers = channel.port1;
    this.buildsChanged();
    if (this.wedgeGraceMs !== undefined) {
      // The event loop tells the thread it runs; a loop that stops telling it is blocked (wedge.ts).
      const alive = () => thread.postMessage({ type: "alive", at: monotonicMs() } satisfies HeartbeatCommand);
      alive();
      this.aliveTimer = setInterval(alive, health.heartbeatMs);
      this.aliveTimer.unref();
    }
  }

  private handleMessage(message: HeartbeatMessage): void {
    this.firstAnswered?.();
    this.threadAnswered?.();
    // The thread runs: the event loop's stand-in beats stop.
    clearInterval(this.timer);
    this.timer = undefined;
    if (message.type === "held") {
      this.answered({ asked: message.asked, held: message.held, sentAt: message.sentAt });
    } else this.logger.warn({ err: message.message }, "heartbeat to PostgreSQL failed");
  }

  private answered(answer: HeartbeatAnswer): void {
    this.lastAnswerAt = Math.max(this.lastAnswerAt ?? Number.NEGATIVE_INFINITY, answer.sentAt);
    this.onAnswer(answer);
  }

  private beatOnEventLoop(): void {
    if (this.timer) return;
    void this.beat();
    this.timer = setInterval(() => void this.beat(), this.queue.workers.health.heartbeatMs);
  }

  private async beat(): Promise<void> {
    const asked = this.builds();
    const sentAt = monotonicMs();
    const held = await this.queue.workers.heartbeat(this.workerId, asked).catch(() => undefined);
    this.firstAnswered?.();
    if (held) this.answered({ asked, held, sentAt });
  }
}

/** True when `work` settled within `ms`. */
async function within(work: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([work.then(() => true), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}
