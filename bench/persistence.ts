/**
 * `--only persistence`: what Redis persistence costs our queue, and what it loses.
 *
 * 1. Throughput: the throughput workload (bench/throughput.ts: submitMany in chunks, then the claim
 *    loop at concurrency 50, every build checked in PostgreSQL) against private redis-servers with no
 *    persistence, AOF `appendfsync everysec` and AOF `appendfsync always` (never RDB snapshots), plus
 *    plain ZADDs (50 in flight) for Redis alone; each with its ratio to no persistence.
 * 2. Loss: Redis killed with SIGKILL while submits run and the disk is loaded by other writers
 *    (`dd` with O_DSYNC 4 KiB writes, and large buffered writes with an fsync at the end, on the same
 *    filesystem). After a restart on the same AOF, counts the builds whose index entry Redis had
 *    acknowledged but lost, checks that PostgreSQL has every build, and that the reconciler (run when
 *    the queue opens again) makes the index whole. Plain ZADDs run alongside, counted the same way.
 *    The kill comes at a set time ("random": whatever Redis is doing then), or, for everysec, once
 *    INFO has shown the same AOF fsync in progress for 200 ms ("during fsync": Redis then holds the
 *    writes acknowledged since that fsync began in memory only; the worst case, made to happen).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import type { BuildQueue } from "../src/index.js";
import { inputs, openQueue } from "./ours.js";
import { type Persistence, PersistentRedis } from "./persistent-redis.js";
import { dropSchema, newSchema, statusCounts } from "./postgres.js";
import { median } from "./stats.js";
import { ourThroughput, type ThroughputOptions, type ThroughputSample } from "./throughput.js";

export const PERSISTENCE_MODES: readonly Persistence[] = ["none", "everysec", "always"];

export interface PersistenceOptions {
  builds: number;
  runs: number;
  /** Kill tries under disk load: everysec at a set time, everysec during an fsync, always at a set time. */
  everysecTries: number;
  duringFsyncTries: number;
  alwaysTries: number;
  log: (line: string) => void;
}

export interface ModeThroughput {
  persistence: Persistence;
  runs: (ThroughputSample & { zaddPerSec: number })[];
  submitPerSec: number;
  processedPerSec: number;
  zaddPerSec: number;
  /** Medians divided by those with no persistence. */
  ratio: { submit: number; processed: number; zadd: number };
}

export type KillTiming = "random" | "during-fsync";

export interface LossTry {
  persistence: Persistence;
  kill: KillTiming;
  /** "during-fsync": how long the fsync had been in progress at the kill (ms); null: none lasted long
   * enough before the time ran out (killed then anyway). */
  fsyncAgeAtKillMs: number | null;
  /** How long the disk load ran before the kill. */
  loadMs: number;
  /** aof_delayed_fsync just before the kill (writes held back for 2 s by a slow fsync, since start). */
  delayedFsync: number;
  /** Share of INFO samples (every 20 ms during the load) with a background AOF fsync in progress
   * (aof_pending_bio_fsync > 0): with everysec, Redis postpones writing to the file meanwhile. */
  fsyncShare: number;
  /** The longest run of consecutive samples with an fsync in progress (ms). */
  longestFsyncMs: number;
  /** Builds whose submit returned (committed in PostgreSQL), before and after the kill. */
  submitted: number;
  /** Of those, builds whose index entry Redis had acknowledged before the kill (a lower bound). */
  ackedInRedis: number;
  /** Acknowledged index entries missing after the restart. */
  lostInRedis: number;
  /** How long before the kill the oldest lost entry had been acknowledged (ms); null when none lost. */
  oldestLostAckMs: number | null;
  /** Builds found in PostgreSQL (should equal submitted). */
  inRecord: number;
  /** Lost entries back in the index after the queue opened again (its reconcile). */
  restoredByReconcile: number;
  /** After that reconcile, the index holds exactly the queued builds of PostgreSQL. */
  indexEqualsRecord: boolean;
  /** Plain ZADDs acknowledged before the kill, and missing after the restart. */
  rawAcked: number;
  rawLost: number;
}

export interface PersistencePart {
  throughput: { builds: number; chunk: number; concurrency: number; modes: ModeThroughput[] };
  loss: { diskLoad: string; tries: LossTry[] };
}

const DISK_LOAD =
  "16 x dd bs=4k oflag=dsync (4 KiB writes, each synced) + 4 x dd bs=1M count=2000 conv=fsync " +
  "(2 GB buffered, then fsync), in a loop, in the same filesystem as Redis's AOF and PostgreSQL";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function runPersistence(options: PersistenceOptions): Promise<PersistencePart> {
  const tp: ThroughputOptions = { builds: options.builds, chunk: 1000, concurrency: 50 };
  const modes = await throughputByMode(tp, options);
  const tries: LossTry[] = [];
  const plan: [Persistence, KillTiming][] = [
    ...Array.from(
      { length: options.everysecTries },
      () => ["everysec", "random"] as [Persistence, KillTiming],
    ),
    ...Array.from(
      { length: options.duringFsyncTries },
      () => ["everysec", "during-fsync"] as [Persistence, KillTiming],
    ),
    ...Array.from({ length: options.alwaysTries }, () => ["always", "random"] as [Persistence, KillTiming]),
  ];
  for (const [i, [persistence, kill]] of plan.entries()) {
    const t = await lossTry(persistence, kill, 3000 + ((i * 1700) % 3000));
    options.log(
      `  loss try ${i + 1}/${plan.length} (${persistence}, kill ${kill}, load ${t.loadMs} ms): ` +
        `${t.lostInRedis} of ${t.ackedInRedis} acknowledged index entries lost, ${t.rawLost} of ${t.rawAcked} ZADDs; ` +
        `PostgreSQL ${t.inRecord}/${t.submitted}; reconcile restored ${t.restoredByReconcile}; delayed fsyncs ` +
        `${t.delayedFsync}; fsync in progress in ${Math.round(t.fsyncShare * 100)} % of samples, longest ` +
        `${t.longestFsyncMs} ms; fsync age at kill ${t.fsyncAgeAtKillMs ?? "-"} ms`,
    );
    tries.push(t);
  }
  return { throughput: { ...tp, modes }, loss: { diskLoad: DISK_LOAD, tries } };
}

// ------------------------------------------------------------------ throughput

async function throughputByMode(
  tp: ThroughputOptions,
  options: PersistenceOptions,
): Promise<ModeThroughput[]> {
  options.log(
    `persistence: throughput, ${tp.builds} builds x ${options.runs} runs per Redis persistence setting`,
  );
  const samples = new Map<Persistence, (ThroughputSample & { zaddPerSec: number })[]>(
    PERSISTENCE_MODES.map((p) => [p, []]),
  );
  // Interleaved, and a new server each time (an AOF that grew in an earlier run is not measured again).
  for (let run = 1; run <= options.runs; run++) {
    for (const persistence of PERSISTENCE_MODES) {
      const server = await PersistentRedis.start(persistence);
      try {
        const sample = await ourThroughput("redis", server.url, tp);
        const zaddPerSec = await zaddRate(server.url, 50_000, 50);
        samples.get(persistence)?.push({ ...sample, zaddPerSec });
        options.log(
          `  run ${run} ${persistence}: submit ${Math.round(sample.submitPerSec)}/s, processed ` +
            `${Math.round(sample.processedPerSec)}/s, ZADD ${Math.round(zaddPerSec)}/s`,
        );
      } finally {
        await server.destroy();
      }
    }
  }
  const summary = PERSISTENCE_MODES.map((persistence) => {
    const runs = samples.get(persistence) ?? [];
    return {
      persistence,
      runs,
      submitPerSec: median(runs.map((r) => r.submitPerSec)),
      processedPerSec: median(runs.map((r) => r.processedPerSec)),
      zaddPerSec: median(runs.map((r) => r.zaddPerSec)),
    };
  });
  const base = summary[0] as (typeof summary)[number];
  return summary.map((s) => ({
    ...s,
    ratio: {
      submit: s.submitPerSec / base.submitPerSec,
      processed: s.processedPerSec / base.processedPerSec,
      zadd: s.zaddPerSec / base.zaddPerSec,
    },
  }));
}

/** ZADDs per second with `inFlight` commands outstanding on one connection (Redis alone). */
async function zaddRate(url: string, count: number, inFlight: number): Promise<number> {
  const client = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    await client.ping();
    let next = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (next < count) {
          const n = next++;
          await client.zadd("bench:zadd", n, `m${n}`);
        }
      }),
    );
    return (count / (performance.now() - started)) * 1000;
  } finally {
    client.disconnect();
  }
}

// ------------------------------------------------------------------ loss after kill -9 under disk load

/** Other writers on the disk: processes in their own group, killed together. */
class DiskLoad {
  private readonly dir = mkdtempSync(path.join(tmpdir(), "oculus-bench-diskload-"));
  private readonly children: ChildProcess[] = [];
  /** The writers run in groups of their own: a benchmark that exits any way must not leave them running. */
  private readonly killOnExit = () => {
    for (const child of this.children) if (child.pid !== undefined) this.killGroup(child.pid);
  };

  private killGroup(pid: number): void {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // already gone
    }
  }

  start(): void {
    process.once("exit", this.killOnExit);
    const loops = [
      ...Array.from({ length: 16 }, (_, i) => `dd if=/dev/zero of=sync${i} bs=4k count=25000 oflag=dsync`),
      ...Array.from({ length: 4 }, (_, i) => `dd if=/dev/zero of=big${i} bs=1M count=2000 conv=fsync`),
    ];
    for (const command of loops) {
      const child = spawn("sh", ["-c", `while :; do ${command} 2>/dev/null; done`], {
        cwd: this.dir,
        detached: true,
        stdio: "ignore",
      });
      this.children.push(child);
    }
  }

  async stop(): Promise<void> {
    process.removeListener("exit", this.killOnExit);
    for (const child of this.children.splice(0)) {
      if (child.pid === undefined || child.exitCode !== null) continue;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      this.killGroup(child.pid);
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Submits builds in a loop, noting when each submit returned and whether Redis had taken the entries. */
class Producer {
  readonly acked = new Map<string, number>();
  readonly ackedInRedis = new Set<string>();
  private running = true;
  private readonly loops: Promise<void>[];

  constructor(queue: BuildQueue, loops: number, batch: number) {
    this.loops = Array.from({ length: loops }, async () => {
      while (this.running) {
        const results = await queue.submitMany(inputs(batch));
        const at = performance.now();
        // A failed index write switches the queue to "postgres" before submitMany returns.
        const inRedis = queue.mode === "redis";
        for (const r of results) {
          this.acked.set(r.build.id, at);
          if (inRedis) this.ackedInRedis.add(r.build.id);
        }
      }
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}

/** Plain ZADDs of increasing integers, as fast as Redis takes them; counts the acknowledged ones. */
class RawWriter {
  readonly acked = new Set<number>();
  private running = true;
  private loops: Promise<void>[] = [];
  private readonly client: Redis;

  private constructor(url: string) {
    this.client = new Redis(url, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      retryStrategy: () => null,
    });
    this.client.on("error", () => undefined);
  }

  static async start(url: string): Promise<RawWriter> {
    const writer = new RawWriter(url);
    await writer.client.connect();
    writer.run();
    return writer;
  }

  private run(): void {
    let next = 0;
    this.loops = Array.from({ length: 20 }, async () => {
      while (this.running) {
        const n = next++;
        try {
          await this.client.zadd("bench:raw", n, String(n));
          this.acked.add(n);
        } catch {
          return;
        }
      }
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    this.client.disconnect();
  }
}

async function lossTry(persistence: Persistence, kill: KillTiming, loadMs: number): Promise<LossTry> {
  const server = await PersistentRedis.start(persistence);
  const schema = newSchema(`loss_${persistence}`);
  const load = new DiskLoad();
  try {
    const queue = await openQueue("redis", schema, server.url);
    const producer = new Producer(queue, 8, 200);
    const raw = await RawWriter.start(server.url);
    await sleep(1000);
    load.start();
    const watched = await watchAof(server, loadMs);
    const fsyncAgeAtKillMs = kill === "during-fsync" ? await waitForLongFsync(server, 200, 15_000) : null;
    const killedAt = performance.now();
    await server.kill();
    await raw.stop();
    await sleep(300); // submits go on, on PostgreSQL alone
    await producer.stop();
    await load.stop();
    await queue.close();
    const result = await countAfterRestart(server, schema, producer, raw, killedAt);
    return { persistence, kill, fsyncAgeAtKillMs, loadMs, ...watched, ...result };
  } finally {
    await load.stop();
    await server.destroy();
    await dropSchema(schema);
  }
}

const infoField = (info: string, name: string) => Number(new RegExp(`${name}:(\\d+)`).exec(info)?.[1] ?? 0);

/** Waits `ms`, reading INFO persistence every 20 ms: how often, and how long, an AOF fsync was in progress. */
async function watchAof(
  server: PersistentRedis,
  ms: number,
): Promise<Pick<LossTry, "delayedFsync" | "fsyncShare" | "longestFsyncMs">> {
  const client = server.client();
  let delayedFsync = 0;
  let samples = 0;
  let syncing = 0;
  let since: number | undefined;
  let longestFsyncMs = 0;
  try {
    const until = performance.now() + ms;
    while (performance.now() < until) {
      const info = await client.info("persistence").catch(() => "");
      const now = performance.now();
      delayedFsync = Math.max(delayedFsync, infoField(info, "aof_delayed_fsync"));
      samples += 1;
      if (infoField(info, "aof_pending_bio_fsync") > 0) {
        syncing += 1;
        since ??= now;
        longestFsyncMs = Math.max(longestFsyncMs, now - since);
      } else {
        since = undefined;
      }
      await sleep(20);
    }
  } finally {
    client.disconnect();
  }
  return {
    delayedFsync,
    fsyncShare: samples > 0 ? syncing / samples : 0,
    longestFsyncMs: Math.round(longestFsyncMs),
  };
}

/**
 * Polls INFO until one AOF fsync has been in progress for `minMs`; returns how long it had been (ms),
 * or null when none lasted that long within `timeoutMs`.
 */
async function waitForLongFsync(
  server: PersistentRedis,
  minMs: number,
  timeoutMs: number,
): Promise<number | null> {
  const client = server.client();
  try {
    const until = performance.now() + timeoutMs;
    let since: number | undefined;
    while (performance.now() < until) {
      const pending = infoField(await client.info("persistence"), "aof_pending_bio_fsync") > 0;
      const now = performance.now();
      if (!pending) since = undefined;
      else if (since === undefined) since = now;
      else if (now - since >= minMs) return Math.round(now - since);
      await sleep(2);
    }
    return null;
  } finally {
    client.disconnect();
  }
}

async function countAfterRestart(
  server: PersistentRedis,
  schema: string,
  producer: Producer,
  raw: RawWriter,
  killedAt: number,
): Promise<
  Omit<
    LossTry,
    "persistence" | "kill" | "fsyncAgeAtKillMs" | "loadMs" | "delayedFsync" | "fsyncShare" | "longestFsyncMs"
  >
> {
  await server.restart();
  const client = server.client();
  try {
    const present = new Set(await client.zrange(`${schema}:build_queue`, 0, -1));
    const lost = [...producer.ackedInRedis].filter((id) => !present.has(id));
    const rawPresent = new Set((await client.zrange("bench:raw", 0, -1)).map(Number));
    const rawLost = [...raw.acked].filter((n) => !rawPresent.has(n)).length;
    const oldest =
      lost.length > 0 ? Math.min(...lost.map((id) => producer.acked.get(id) ?? killedAt)) : undefined;
    const counts = await statusCounts(schema);
    // Opening the queue reconciles the index with PostgreSQL before it serves.
    const reopened = await openQueue("redis", schema, server.url);
    await reopened.close();
    const after = new Set(await client.zrange(`${schema}:build_queue`, 0, -1));
    const all = [...producer.acked.keys()];
    return {
      submitted: producer.acked.size,
      ackedInRedis: producer.ackedInRedis.size,
      lostInRedis: lost.length,
      oldestLostAckMs: oldest === undefined ? null : Math.round(killedAt - oldest),
      inRecord: counts.queued ?? 0,
      restoredByReconcile: lost.filter((id) => after.has(id)).length,
      indexEqualsRecord: after.size === all.length && all.every((id) => after.has(id)),
      rawAcked: raw.acked.size,
      rawLost,
    };
  } finally {
    client.disconnect();
  }
}

export function summarizeLoss(tries: LossTry[], persistence: Persistence, kill: KillTiming) {
  const mine = tries.filter((t) => t.persistence === persistence && t.kill === kill);
  const withLoss = mine.filter((t) => t.lostInRedis > 0);
  return {
    tries: mine.length,
    triesWithLoss: withLoss.length,
    lost: mine.map((t) => t.lostInRedis),
    rawLost: mine.map((t) => t.rawLost),
    recordComplete: mine.every((t) => t.inRecord === t.submitted),
    indexRestored: mine.every((t) => t.indexEqualsRecord && t.restoredByReconcile === t.lostInRedis),
  };
}
