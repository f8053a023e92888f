/**
 * Progress fan-out: 1,000 subscribers, 100 progress updates per second, delivery latency per
 * delivered event per subscriber.
 *
 * The PRODUCER is another process (bench/fanout-producer.ts, from the compiled dist/): its own queue,
 * hub and connections, like a worker on another machine. It submits and claims 100 builds and sends
 * 100 updates per second spread evenly (one every 10 ms), round-robin, so each build reports once a
 * second: far apart from the 200 ms progress throttle (progressIntervalMs, set explicitly to its
 * default), which therefore writes every update at once and coalesces none. Each update carries its
 * sequence number (`iteration`) and its send time (`message`: timeOrigin + performance.now(), taken
 * just before reportProgress).
 *
 * This process opens its own BuildQueue on the same schema and prefix and subscribes 1,000 times
 * (`queue.events.subscribe`): 900 all-builds subscriptions (dashboards) and 100 per-build ones (one
 * per build: a build page). Per delivered progress event per subscriber: latency = receive time in the
 * subscriber's loop - send time (same machine clock). It includes the progress write in the producer
 * (throttle, fenced UPDATE + event INSERT, commit), the notice (Redis pub/sub in Redis mode, NOTIFY on
 * the PostgreSQL path), this process's hub read of build_events (one query, shared by all
 * subscribers) and the in-process fan-out to the 1,000 async iterators.
 *
 * BullMQ side by side, same shape: the producer holds 100 active jobs in a Worker and calls
 * job.updateProgress({seq, sentAt}) (HSET + XADD to the queue's event stream); this process runs ONE
 * QueueEvents (one XREAD BLOCK connection, the analogue of our one hub per process) with 900 'progress'
 * listeners and 100 'progress:<jobId>' listeners. BullMQ's stream is capped (~10,000 events) and not a
 * durable per-build history; the comparison is of the live path only.
 *
 * Every (subscriber, update) pair is checked: missing and duplicate deliveries are counted per
 * subscriber over the measured updates (the warm-up's are not counted).
 */
import type { ChildProcess } from "node:child_process";
import type { EventEmitter } from "node:events";
import { setMaxListeners } from "node:events";
import os from "node:os";
import { createInterface } from "node:readline";
import { type ConnectionOptions, QueueEvents } from "bullmq";
import { BuildQueue } from "../src/index.js";
import { spawnBenchScript } from "./child.js";
import type { ProducerReport } from "./fanout-producer.js";
import { DATABASE_URL, dropSchema, newSchema } from "./postgres.js";
import type { PrivateRedis } from "./redis-server.js";
import { type Distribution, distributionOf, sleep, within } from "./stats.js";

export type FanoutSystem = "redis" | "postgres" | "bullmq";
export const FANOUT_SYSTEMS: readonly FanoutSystem[] = ["redis", "postgres", "bullmq"];

export interface FanoutOptions {
  /** Measured seconds of updates per system (after the warm-up). */
  seconds: number;
  warmupSeconds: number;
  /** Updates per second, all builds together. */
  rate: number;
  builds: number;
  allBuildsSubscribers: number;
  /** One per build (at most `builds`). */
  perBuildSubscribers: number;
  progressIntervalMs: number;
  /** After the producer's last update: how long to wait for the deliveries still on their way. */
  drainMs: number;
  systems: readonly FanoutSystem[];
  log: (line: string) => void;
}

export interface FanoutSystemResult {
  /** Measured updates sent. */
  updates: number;
  /** updates / (last - first measured send). */
  achievedRatePerSec: number;
  /** Deliveries due (each measured update to every all-builds subscriber and to its build's one). */
  expected: number;
  /** Distinct (subscriber, update) deliveries received. */
  delivered: number;
  missing: number;
  /** Deliveries beyond the first of the same update to the same subscriber. */
  duplicates: number;
  /** Events a per-build subscriber got for another build, or with an unknown sequence number. */
  foreign: number;
  subscribersMissing: number;
  subscribersWithDuplicates: number;
  maxMissingPerSubscriber: number;
  /** Subscriptions that ended with an error. */
  subscriptionErrors: string[];
  /** Every delivery: send -> receive in the subscriber's loop. */
  ms: Distribution;
  allBuildsMs: Distribution;
  perBuildMs: Distribution;
  /** Per update: send -> its FIRST delivery (write, notice, hub read; almost no fan-out). */
  firstMs: Distribution;
  /** Per update: first -> last delivery (the in-process fan-out). */
  spreadMs: Distribution;
  /** The producer's side: its calls (ours: the progress commit), its schedule, its CPU. */
  producer: ProducerReport;
  /** CPU time of this (the subscriber) process over the measured window, and that window. */
  subscriberCpuMs: number;
  subscriberWallMs: number;
  /** Time to attach the 1,000 subscriptions (snapshots included). */
  attachSec: number;
  /** os.loadavg() (1, 5, 15 minutes) when this system's measurement started and ended. */
  loadAverage: { start: number[]; end: number[] };
  durationSec: number;
}

export interface FanoutPart {
  seconds: number;
  warmupSeconds: number;
  rate: number;
  builds: number;
  subscribers: { allBuilds: number; perBuild: number };
  progressIntervalMs: number;
  note: string;
  results: Partial<Record<FanoutSystem, FanoutSystemResult>>;
}

const now = () => performance.timeOrigin + performance.now();

// ------------------------------------------------------------------ producer process

const children = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** Kills every fan-out producer process still running (the benchmark's cleanup, also on errors). */
export async function stopFanoutProducers(): Promise<void> {
  await Promise.all([...children].map((child) => killChild(child)));
}

async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGKILL");
  await within(exited, 10_000, "fan-out producer exit").catch(() => undefined);
}

export class Producer {
  private readonly child: ChildProcess;
  private readonly seen = new Map<string, string>();
  private readonly waiters = new Map<string, (rest: string) => void>();
  private readonly exited: Promise<void>;
  private stderrTail: string[] = [];

  constructor(args: string[], log: (line: string) => void) {
    this.child = spawnBenchScript("fanout-producer", args, { withoutRedisUrl: true });
    children.add(this.child);
    this.exited = new Promise((resolve) => this.child.once("exit", () => resolve()));
    void this.exited.then(() => children.delete(this.child));
    this.child.on("error", (err) => log(`    fan-out producer error: ${err.message}`));
    this.child.stdin?.on("error", () => undefined);
    createInterface({ input: this.child.stdout as NodeJS.ReadableStream }).on("line", (text) => {
      const space = text.indexOf(" ");
      const word = space < 0 ? text : text.slice(0, space);
      const rest = space < 0 ? "" : text.slice(space + 1);
      const waiter = this.waiters.get(word);
      if (waiter) {
        this.waiters.delete(word);
        waiter(rest);
      } else this.seen.set(word, rest);
    });
    createInterface({ input: this.child.stderr as NodeJS.ReadableStream }).on("line", (text) => {
      this.stderrTail = [...this.stderrTail.slice(-19), text];
      log(`    [fan-out producer ${this.child.pid}] ${text}`);
    });
  }

  /** The rest of the next line starting with `word`. */
  next(word: string, ms: number): Promise<string> {
    const found = new Promise<string>((resolve, reject) => {
      const rest = this.seen.get(word);
      if (rest !== undefined) {
        this.seen.delete(word);
        resolve(rest);
        return;
      }
      this.waiters.set(word, resolve);
      void this.exited.then(() =>
        reject(
          new Error(`fan-out producer exited while waiting for "${word}": ${this.stderrTail.join(" | ")}`),
        ),
      );
    });
    return within(found, ms, `"${word}" from the fan-out producer`).finally(() => this.waiters.delete(word));
  }

  send(line: string): void {
    this.child.stdin?.write(`${line}\n`);
  }

  /** Closes its stdin (it closes its queue and exits), then SIGKILL after 3 s. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.stdin?.end();
    await within(this.exited, 3000, "fan-out producer exit").catch(() => killChild(this.child));
  }
}

// ------------------------------------------------------------------ recording

/** Every delivery to every subscriber, checked against the updates that were due to it. */
class Recorder {
  private readonly total: number;
  private readonly measuredFrom: number;
  /** Per subscriber: -1 (all builds) or the index of its build. */
  private readonly buildOf: Int32Array;
  /** Per subscriber, per update: deliveries (saturating at 255). */
  private readonly counts: Uint8Array[];
  private readonly allBuildsLatency: Float64Array;
  private readonly perBuildLatency: Float64Array;
  private allBuildsLength = 0;
  private perBuildLength = 0;
  private readonly sentAt: Float64Array;
  private readonly firstAt: Float64Array;
  private readonly lastAt: Float64Array;
  readonly expected: number;
  delivered = 0;
  foreign = 0;

  constructor(
    private readonly options: FanoutOptions,
    subscribers: number[],
  ) {
    this.total = Math.round((options.warmupSeconds + options.seconds) * options.rate);
    this.measuredFrom = Math.round(options.warmupSeconds * options.rate);
    this.buildOf = Int32Array.from(subscribers);
    this.counts = subscribers.map(() => new Uint8Array(this.total));
    const measured = this.total - this.measuredFrom;
    let expected = 0;
    let perBuild = 0;
    for (const b of subscribers) {
      const due = b < 0 ? measured : this.dueTo(b);
      expected += due;
      if (b >= 0) perBuild += due;
    }
    this.expected = expected;
    this.allBuildsLatency = new Float64Array(expected - perBuild);
    this.perBuildLatency = new Float64Array(perBuild);
    this.sentAt = new Float64Array(this.total).fill(Number.NaN);
    this.firstAt = new Float64Array(this.total).fill(Number.POSITIVE_INFINITY);
    this.lastAt = new Float64Array(this.total).fill(Number.NEGATIVE_INFINITY);
  }

  /** Measured updates of build b (update seq goes to build seq % builds). */
  private dueTo(b: number): number {
    let n = 0;
    for (let seq = this.measuredFrom; seq < this.total; seq++) if (seq % this.options.builds === b) n++;
    return n;
  }

  record(sub: number, seq: number, sentAt: number, at: number): void {
    const b = this.buildOf[sub] ?? -1;
    if (
      !Number.isInteger(seq) ||
      seq < 0 ||
      seq >= this.total ||
      (b >= 0 && seq % this.options.builds !== b)
    ) {
      this.foreign += 1;
      return;
    }
    const counts = this.counts[sub] as Uint8Array;
    const n = counts[seq] ?? 0;
    if (n < 255) counts[seq] = n + 1;
    if (n > 0 || seq < this.measuredFrom) return;
    this.delivered += 1;
    const latency = at - sentAt;
    if (b >= 0) this.perBuildLatency[this.perBuildLength++] = latency;
    else this.allBuildsLatency[this.allBuildsLength++] = latency;
    this.sentAt[seq] = sentAt;
    if (at < (this.firstAt[seq] ?? 0)) this.firstAt[seq] = at;
    if (at > (this.lastAt[seq] ?? 0)) this.lastAt[seq] = at;
  }

  summary() {
    let missing = 0;
    let duplicates = 0;
    let subscribersMissing = 0;
    let subscribersWithDuplicates = 0;
    let maxMissingPerSubscriber = 0;
    this.counts.forEach((counts, sub) => {
      const b = this.buildOf[sub] ?? -1;
      let subMissing = 0;
      let subDuplicates = 0;
      for (let seq = this.measuredFrom; seq < this.total; seq++) {
        if (b >= 0 && seq % this.options.builds !== b) continue;
        const n = counts[seq] ?? 0;
        if (n === 0) subMissing += 1;
        else subDuplicates += n - 1;
      }
      missing += subMissing;
      duplicates += subDuplicates;
      if (subMissing > 0) subscribersMissing += 1;
      if (subDuplicates > 0) subscribersWithDuplicates += 1;
      maxMissingPerSubscriber = Math.max(maxMissingPerSubscriber, subMissing);
    });
    const first: number[] = [];
    const spread: number[] = [];
    for (let seq = this.measuredFrom; seq < this.total; seq++) {
      const sent = this.sentAt[seq] ?? Number.NaN;
      if (Number.isNaN(sent)) continue;
      const firstAt = this.firstAt[seq] ?? Number.NaN;
      first.push(firstAt - sent);
      spread.push((this.lastAt[seq] ?? Number.NaN) - firstAt);
    }
    const allBuilds = this.allBuildsLatency.subarray(0, this.allBuildsLength);
    const perBuild = this.perBuildLatency.subarray(0, this.perBuildLength);
    const everything = new Float64Array(allBuilds.length + perBuild.length);
    everything.set(allBuilds);
    everything.set(perBuild, allBuilds.length);
    return {
      missing,
      duplicates,
      subscribersMissing,
      subscribersWithDuplicates,
      maxMissingPerSubscriber,
      ms: distributionOf(everything),
      allBuildsMs: distributionOf(Float64Array.from(allBuilds)),
      perBuildMs: distributionOf(Float64Array.from(perBuild)),
      firstMs: distributionOf(Float64Array.from(first)),
      spreadMs: distributionOf(Float64Array.from(spread)),
    };
  }
}

// ------------------------------------------------------------------ one system

/** Subscriber i: -1 (all builds) for the first allBuildsSubscribers, then build i - allBuilds. */
function subscriberPlan(options: FanoutOptions): number[] {
  return [
    ...Array.from({ length: options.allBuildsSubscribers }, () => -1),
    ...Array.from({ length: options.perBuildSubscribers }, (_, i) => i % options.builds),
  ];
}

interface Attached {
  /** Resolves when every subscriber is attached and its deliveries are counted from now on. */
  ready: Promise<void>;
  /** Ends the subscriptions; resolves when they have all ended. */
  close: () => Promise<void>;
  errors: string[];
}

async function subscribeOurs(
  queue: BuildQueue,
  ids: string[],
  plan: number[],
  recorder: Recorder,
): Promise<Attached> {
  const controller = new AbortController();
  setMaxListeners(plan.length + 100, controller.signal);
  const errors: string[] = [];
  const ended: Promise<void>[] = [];
  const consume = async (sub: number, buildId: string | undefined, attached: () => void) => {
    try {
      for await (const item of queue.events.subscribe({ buildId, signal: controller.signal })) {
        if (item.kind === "snapshot") {
          attached();
          continue;
        }
        if (item.type !== "progress" || !item.progress) continue;
        const at = now();
        recorder.record(sub, item.progress.iteration ?? -1, Number(item.progress.message), at);
      }
    } catch (err) {
      errors.push(`subscriber ${sub}: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      attached();
    }
  };
  // Attached in batches, so that 1,000 snapshots do not all queue for the pool at once.
  const batch = 50;
  for (let from = 0; from < plan.length; from += batch) {
    const waits: Promise<void>[] = [];
    for (let sub = from; sub < Math.min(plan.length, from + batch); sub++) {
      const b = plan[sub] ?? -1;
      waits.push(
        new Promise<void>((resolve) => {
          ended.push(consume(sub, b < 0 ? undefined : ids[b], resolve));
        }),
      );
    }
    await within(Promise.all(waits), 60_000, "attaching the subscribers");
  }
  return {
    ready: Promise.resolve(),
    close: async () => {
      controller.abort();
      await within(Promise.all(ended), 10_000, "the end of the subscriptions");
    },
    errors,
  };
}

function subscribeBullmq(events: QueueEvents, ids: string[], plan: number[], recorder: Recorder): Attached {
  events.setMaxListeners(plan.length + 100);
  const emitter = events as unknown as EventEmitter;
  const listeners: [string, (args: { data: unknown }) => void][] = [];
  plan.forEach((b, sub) => {
    const listener = (args: { data: unknown }) => {
      const at = now();
      const data = args.data as { seq?: number; sentAt?: number } | null;
      recorder.record(sub, data?.seq ?? -1, data?.sentAt ?? Number.NaN, at);
    };
    const event = b < 0 ? "progress" : `progress:${ids[b]}`;
    emitter.on(event, listener);
    listeners.push([event, listener]);
  });
  return {
    // QueueEvents reads from "$": its XREAD must be blocking before the first update is sent.
    ready: sleep(300),
    close: async () => {
      for (const [event, listener] of listeners) emitter.off(event, listener);
    },
    errors: [],
  };
}

async function runSystem(
  redis: PrivateRedis,
  system: FanoutSystem,
  options: FanoutOptions,
): Promise<FanoutSystemResult> {
  const started = performance.now();
  const loadStart = os.loadavg();
  const { log } = options;
  const plan = subscriberPlan(options);
  const recorder = new Recorder(options, plan);
  const producerArgs = [
    ...["--system", system, "--builds", String(options.builds), "--rate", String(options.rate)],
    ...["--warmup-seconds", String(options.warmupSeconds), "--seconds", String(options.seconds)],
    ...["--progress-interval-ms", String(options.progressIntervalMs)],
  ];
  let queue: BuildQueue | undefined;
  let queueEvents: QueueEvents | undefined;
  let schema: string | undefined;
  let producer: Producer | undefined;
  let attached: Attached | undefined;
  try {
    if (system === "bullmq") {
      const name = `bench-fanout-${process.pid}-${Date.now()}`;
      const connection: ConnectionOptions = {
        host: "127.0.0.1",
        port: redis.port,
        maxRetriesPerRequest: null,
      };
      queueEvents = new QueueEvents(name, { connection });
      queueEvents.on("error", (err) => log(`  QueueEvents error: ${err.message}`));
      await queueEvents.waitUntilReady();
      producerArgs.push("--queue-name", name, "--redis-port", String(redis.port));
    } else {
      schema = newSchema(`fanout_${system}`);
      queue = await BuildQueue.open({
        databaseUrl: DATABASE_URL,
        redisUrl: system === "redis" ? redis.url : undefined,
        schema,
        prefix: schema,
        reconcileIntervalMs: 3_600_000,
      });
      if (queue.mode !== system) throw new Error(`queue opened in ${queue.mode} mode, expected ${system}`);
      producerArgs.push("--database-url", DATABASE_URL, "--schema", schema);
      if (system === "redis") producerArgs.push("--redis-port", String(redis.port));
    }
    producer = new Producer(producerArgs, log);
    const ids = (await producer.next("ready", 60_000)).split(" ")[1]?.split(",") ?? [];
    if (ids.length !== options.builds) throw new Error(`the producer reported ${ids.length} builds`);

    const attachStart = performance.now();
    attached =
      system === "bullmq"
        ? subscribeBullmq(queueEvents as QueueEvents, ids, plan, recorder)
        : await subscribeOurs(queue as BuildQueue, ids, plan, recorder);
    await attached.ready;
    const attachSec = (performance.now() - attachStart) / 1000;
    log(
      `  ${plan.length} subscribers attached in ${attachSec.toFixed(1)} s; ${options.warmupSeconds} s warm-up`,
    );

    producer.send("go");
    await producer.next("measuring", 30_000);
    const cpuStart = process.cpuUsage();
    const wallStart = performance.now();
    log(`  measuring ${options.seconds} s`);
    const report = JSON.parse(
      await producer.next("done", (options.warmupSeconds + options.seconds) * 1000 + 60_000),
    ) as ProducerReport;
    const cpu = process.cpuUsage(cpuStart);
    const subscriberWallMs = performance.now() - wallStart;
    const drainUntil = performance.now() + options.drainMs;
    while (recorder.delivered < recorder.expected && performance.now() < drainUntil) await sleep(20);
    await attached.close();
    const summary = recorder.summary();
    const loadEnd = os.loadavg();
    return {
      updates: report.sent,
      achievedRatePerSec:
        report.sendWindowMs > 0 ? ((report.sent - 1) / report.sendWindowMs) * 1000 : Number.NaN,
      expected: recorder.expected,
      delivered: recorder.delivered,
      foreign: recorder.foreign,
      subscriptionErrors: attached.errors.slice(0, 10),
      ...summary,
      producer: report,
      subscriberCpuMs: (cpu.user + cpu.system) / 1000,
      subscriberWallMs,
      attachSec,
      loadAverage: { start: loadStart, end: loadEnd },
      durationSec: (performance.now() - started) / 1000,
    };
  } finally {
    await attached?.close().catch(() => undefined);
    await producer?.stop().catch(() => undefined);
    await queueEvents?.close().catch(() => undefined);
    await queue?.close().catch((err: Error) => log(`  could not close the ${system} queue: ${err.message}`));
    if (schema) await dropSchema(schema).catch(() => undefined);
  }
}

const fmt = (n: number) => n.toFixed(2);

export async function runFanout(redis: PrivateRedis, options: FanoutOptions): Promise<FanoutPart> {
  const results: Partial<Record<FanoutSystem, FanoutSystemResult>> = {};
  try {
    for (const system of options.systems) {
      options.log(
        `fanout: ${system}, ${options.allBuildsSubscribers} all-builds + ${options.perBuildSubscribers} per-build subscribers, ${options.rate} updates/s over ${options.builds} builds, producer in another process`,
      );
      await redis.flushAll();
      const r = await runSystem(redis, system, options);
      options.log(
        `  p50 ${fmt(r.ms.p50)} ms, p99 ${fmt(r.ms.p99)} ms, max ${fmt(r.ms.max)} ms; delivered ${r.delivered}/${r.expected} (missing ${r.missing}, duplicates ${r.duplicates}); subscriber CPU ${fmt((r.subscriberCpuMs / r.subscriberWallMs) * 100)} % of a core; load ${r.loadAverage.start[0]?.toFixed(2)} -> ${r.loadAverage.end[0]?.toFixed(2)}`,
      );
      results[system] = r;
    }
  } finally {
    await stopFanoutProducers();
  }
  return {
    seconds: options.seconds,
    warmupSeconds: options.warmupSeconds,
    rate: options.rate,
    builds: options.builds,
    subscribers: { allBuilds: options.allBuildsSubscribers, perBuild: options.perBuildSubscribers },
    progressIntervalMs: options.progressIntervalMs,
    note:
      "producer (reportProgress / job.updateProgress) in another process, subscribers in this one; " +
      "latency = receive in the subscriber's loop - send time carried in the update (timeOrigin + performance.now(), same machine)",
    results,
  };
}
