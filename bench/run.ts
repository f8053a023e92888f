/**
 * `npm run bench [-- --json] [--runs N] [--builds N] [--latency N] [--skip-scale] [--scale-max N]
 *   [--skip-recovery] [--recovery-tries N] [--recovery-default-tries N] [--recovery-bullmq-default-tries N]
 *   [--skip-stop] [--stop-tries N] [--skip-fanout] [--fanout-seconds N] [--only PART[,PART...]]
 *   [--persistence-builds N] [--persistence-tries N] [--skip-http] [--http-seconds N]
 *   [--http-connections N,N...] [--http-read-queue N] [--http-sse-connections N] [--http-sse-clients N]
 *   [--http-sse-seconds N] [--http-sse-rate N[,N...]] [--http-parts submit,read,sse]
 *   [--idle-workers N] [--idle-seconds N] [--processes-builds N]
 *   [--pressure-seconds CLEAN,XID,READERS] [--pressure-systems redis,postgres,pgboss,graphile]
 *   [--pressure-rate JOBS_PER_SEC (0: keep a backlog)] [--allow-busy]`
 *
 * Our queue (Redis mode and PostgreSQL-only mode) and BullMQ side by side, on one private
 * redis-server and one PostgreSQL: throughput, dispatch latency, behaviour at scale (in this
 * process), worker recovery after a kill -9 (worker child processes, bench/recovery.ts), stop
 * latency to a worker in another process (bench/stop.ts), and progress fan-out from a producer
 * process to 1,000 subscribers (bench/fanout.ts), and the HTTP API in a server process: submit and
 * read rates with autocannon against the library calls, SSE fan-out to 1,000 streams (bench/http.ts).
 * Readable tables on stdout; with --json, one JSON object on stdout and progress on stderr.
 * --only runs just the parts named (throughput, latency, scale, recovery, stop, fanout, http,
 * persistence, idle, processes, pressure).
 * idle (bench/idle.ts): the idle cost of a fleet, ours (the CLI) and BullMQ's: PostgreSQL
 * statements/s, Redis commands/s, CPU per process. processes (bench/processes.ts): processed/s
 * with 1, 2 and 4 worker processes of 25 builds in flight each, BullMQ and ours in both modes.
 * persistence (bench/persistence.ts: Redis fsync settings, kill -9 under disk load) and pressure
 * (bench/pressure.ts: throughput with an xid held and with REPEATABLE READ readers, ours beside pg-boss
 * and graphile-worker, about 15 minutes) run only when named.
 */
import { rmSync } from "node:fs";
import os from "node:os";
import { parseArgs } from "node:util";
import { bullmqThroughput } from "./bullmq.js";
import { HOPS, ourDispatchHops } from "./dispatch-hops.js";
import { FANOUT_SYSTEMS, runFanout, stopFanoutProducers } from "./fanout.js";
import { HTTP_MODES, HTTP_SECTIONS, type HttpSection, runHttp, stopHttpChildren } from "./http.js";
import { runIdle, stopIdleFleets } from "./idle.js";
import { bullmqLatencyAcross, ourLatencyAcross, stopLatencyWorkers } from "./latency.js";
import { runPersistence } from "./persistence.js";
import { PersistentRedis } from "./persistent-redis.js";
import { graphileThroughput, pgBossThroughput } from "./pg-queues.js";
import { DATABASE_URL, dropAllSchemas, postgresVersion } from "./postgres.js";
import { PRESSURE_SYSTEMS, type PressureSystem, runPressure } from "./pressure.js";
import { runProcesses, stopProcessWorkers } from "./processes.js";
import { runRecovery, stopRecoveryWorkers } from "./recovery.js";
import { flushRedis, PrivateRedis } from "./redis-server.js";
import {
  evaluateTargets,
  PREFETCH,
  type RatiosToBullmq,
  REFERENCE,
  type Results,
  renderText,
  THROUGHPUT_SYSTEMS,
  type ThroughputSeries,
  type ThroughputSystem,
} from "./report.js";
import { runScale } from "./scale.js";
import { type Distribution, distribution, median } from "./stats.js";
import { runStop, stopStopWorkers } from "./stop.js";
import { ourThroughput, type ThroughputOptions, type ThroughputSample } from "./throughput.js";

const PARTS = [
  "throughput",
  "latency",
  "scale",
  "recovery",
  "stop",
  "fanout",
  "http",
  "persistence",
  "idle",
  "processes",
  "pressure",
] as const;
type Part = (typeof PARTS)[number];

const OPTIONS = {
  json: { type: "boolean", default: false },
  runs: { type: "string", default: "3" },
  builds: { type: "string", default: "20000" },
  latency: { type: "string", default: "1000" },
  "skip-scale": { type: "boolean", default: false },
  "scale-max": { type: "string", default: "1000000" },
  "skip-recovery": { type: "boolean", default: false },
  "recovery-tries": { type: "string", default: "20" },
  "recovery-default-tries": { type: "string", default: "3" },
  "recovery-bullmq-default-tries": { type: "string", default: "2" },
  "skip-stop": { type: "boolean", default: false },
  "stop-tries": { type: "string", default: "200" },
  "skip-fanout": { type: "boolean", default: false },
  "fanout-seconds": { type: "string", default: "20" },
  "skip-http": { type: "boolean", default: false },
  "http-seconds": { type: "string", default: "10" },
  "http-parts": { type: "string", default: "submit,read,sse" },
  "http-connections": { type: "string", default: "10,50" },
  "http-read-queue": { type: "string", default: "10000" },
  "http-sse-connections": { type: "string", default: "1000" },
  "http-sse-clients": { type: "string", default: "2" },
  "http-sse-seconds": { type: "string", default: "15" },
  "http-sse-rate": { type: "string", default: "100,50,20" },
  "persistence-builds": { type: "string", default: "10000" },
  "persistence-tries": { type: "string", default: "4" },
  "idle-workers": { type: "string", default: "10" },
  "idle-seconds": { type: "string", default: "30" },
  "processes-builds": { type: "string", default: "20000" },
  "pressure-seconds": { type: "string", default: "30,120,60" },
  "pressure-systems": { type: "string", default: PRESSURE_SYSTEMS.join(",") },
  "pressure-rate": { type: "string", default: "0" },
  only: { type: "string" },
  "allow-busy": { type: "boolean", default: false },
} as const;

const USAGE = `usage: npm run bench -- [options]   (or node dist/bench/run.js [options], after npm run build)
${Object.entries(OPTIONS)
  .map(
    ([name, o]) =>
      `  --${name}${o.type === "string" ? ` VALUE (default ${"default" in o ? o.default : "none"})` : ""}`,
  )
  .join("\n")}
parts for --only: ${PARTS.join(", ")}
(persistence and pressure run only when named). docs/benchmarks.md says more.`;

/** The options; --help prints them, an unknown or malformed one is a usage error (exit 2). */
function parseOptions() {
  try {
    return parseArgs({ options: { ...OPTIONS, help: { type: "boolean", short: "h", default: false } } })
      .values;
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    process.exit(2);
  }
}

const args = parseOptions();
if (args.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}

/** The parts to run: --only, else all of them, less the --skip-... ones. */
function selectedParts(): Set<Part> {
  // persistence loads the disk for minutes and kills servers, pressure takes about 15 minutes: only
  // when asked for.
  const parts = new Set<Part>(PARTS.filter((p) => p !== "persistence" && p !== "pressure"));
  if (args.only !== undefined) {
    parts.clear();
    for (const name of args.only.split(",").map((p) => p.trim())) {
      if (!(PARTS as readonly string[]).includes(name)) {
        throw new Error(`--only: unknown part ${name} (parts: ${PARTS.join(", ")})`);
      }
      parts.add(name as Part);
    }
  }
  if (args["skip-scale"]) parts.delete("scale");
  if (args["skip-recovery"]) parts.delete("recovery");
  if (args["skip-stop"]) parts.delete("stop");
  if (args["skip-fanout"]) parts.delete("fanout");
  if (args["skip-http"]) parts.delete("http");
  return parts;
}

function positiveInt(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${value}`);
  return n;
}

const log = (line: string) => process.stderr.write(`${line}\n`);

function toSeries(runs: ThroughputSample[]): ThroughputSeries {
  return {
    runs,
    submitPerSec: median(runs.map((r) => r.submitPerSec)),
    processedPerSec: median(runs.map((r) => r.processedPerSec)),
  };
}

function scaleSizes(max: number): number[] {
  const sizes = [10_000, 100_000, 1_000_000].filter((s) => s <= max);
  if (sizes[sizes.length - 1] !== max && max < 1_000_000) sizes.push(max);
  return sizes;
}

async function throughputPart(redis: PrivateRedis, tp: ThroughputOptions, runs: number) {
  log(`throughput: ${tp.builds} builds x ${runs} runs per system`);
  const samples = Object.fromEntries(THROUGHPUT_SYSTEMS.map((s) => [s, []])) as unknown as Record<
    ThroughputSystem,
    ThroughputSample[]
  >;
  // BullMQ at the platform guide's durability (everysec) and at its durable set-up (always), each on
  // a Redis of its own with an AOF on disk.
  const everysec = await PersistentRedis.start("everysec");
  const always = await PersistentRedis.start("always");
  const warmupBuilds = warmupBuildsOf(tp);
  try {
    // One untimed round first: each system's code is compiled by V8 and its tables and caches
    // warmed before it is measured, so that no system's first timed run pays for it.
    const warmup = { ...tp, builds: warmupBuilds };
    for (const system of THROUGHPUT_SYSTEMS) {
      await redis.flushAll();
      await throughputOf(system, redis, { everysec, always }, warmup);
    }
    log(`  warm-up round done (${warmup.builds} builds per system, untimed)`);
    // Interleaved, so that a disturbance on the machine spreads over every system.
    for (let run = 1; run <= runs; run++) {
      for (const system of THROUGHPUT_SYSTEMS) {
        await redis.flushAll();
        const sample = await throughputOf(system, redis, { everysec, always }, tp);
        samples[system].push(sample);
        const submit = Math.round(sample.submitPerSec);
        log(`  run ${run} ${system}: submit ${submit}/s, processed ${Math.round(sample.processedPerSec)}/s`);
      }
    }
  } finally {
    await everysec.stop(5000);
    await always.stop(5000);
    rmSync(everysec.dir, { recursive: true, force: true });
    rmSync(always.dir, { recursive: true, force: true });
  }
  const series = Object.fromEntries(THROUGHPUT_SYSTEMS.map((s) => [s, toSeries(samples[s])])) as Record<
    ThroughputSystem,
    ThroughputSeries
  >;
  const ratios = Object.fromEntries(
    THROUGHPUT_SYSTEMS.filter((s) => s !== "bullmq").map((s) => [
      s,
      {
        submit: series[s].submitPerSec / series.bullmq.submitPerSec,
        processed: series[s].processedPerSec / series.bullmq.processedPerSec,
      },
    ]),
  ) as RatiosToBullmq;
  return {
    builds: tp.builds,
    chunk: tp.chunk,
    concurrency: tp.concurrency,
    warmupBuilds,
    series,
    ratioToBullmq: ratios,
    reference: REFERENCE.processedPerSec,
  };
}

/** The untimed warm-up round's builds per system: a quarter of a run, whole chunks. */
function warmupBuildsOf(tp: ThroughputOptions): number {
  return Math.min(tp.builds, Math.max(tp.chunk, Math.round(tp.builds / 4 / tp.chunk) * tp.chunk));
}

async function throughputOf(
  system: ThroughputSystem,
  redis: PrivateRedis,
  aof: { everysec: PersistentRedis; always: PersistentRedis },
  tp: ThroughputOptions,
): Promise<ThroughputSample> {
  switch (system) {
    case "bullmq":
      return bullmqThroughput(redis.port, tp);
    case "bullmqEverysec":
      await flushRedis(aof.everysec);
      return bullmqThroughput(aof.everysec.port, tp);
    case "bullmqAlways":
      await flushRedis(aof.always);
      return bullmqThroughput(aof.always.port, tp);
    case "pgboss":
      return pgBossThroughput(tp);
    case "graphile":
      return graphileThroughput(tp);
    default:
      return ourThroughput(
        system.startsWith("redis") ? "redis" : "postgres",
        redis.url,
        system === "redisPrefetch"
          ? { ...tp, prefetch: PREFETCH }
          : system === "redisPrefetchAuto"
            ? { ...tp, prefetch: "auto" }
            : tp,
        system.endsWith("Analyzed"),
      );
  }
}

async function latencyPart(redis: PrivateRedis, count: number, warmup: number) {
  log(`latency: ${count} sequential builds per system (after ${warmup} warm-up builds)`);
  const report = (name: string, d: Distribution) => {
    log(`  ${name} p50 ${d.p50.toFixed(2)} ms, p99 ${d.p99.toFixed(2)} ms`);
    return d;
  };
  await redis.flushAll();
  const bullmq = report("bullmq", distribution(await bullmqLatencyAcross(redis, count, warmup, log)));
  await redis.flushAll();
  const ours = report("redis", distribution(await ourLatencyAcross("redis", redis, count, warmup, log)));
  const postgres = report(
    "postgres",
    distribution(await ourLatencyAcross("postgres", redis, count, warmup, log)),
  );
  await redis.flushAll();
  const hops = await ourDispatchHops(redis.url, count, warmup);
  log(`  redis mode hops (p50 us): ${HOPS.map((h) => `${h} ${Math.round(hops.hopsUs[h].p50)}`).join(", ")}`);
  return {
    count,
    warmup,
    note: "the worker (one slot, idle) in another process than the submitter for all three, timeOrigin + performance.now() on both ends (same machine); the hop breakdown runs both in one process",
    ms: { bullmq, redis: ours, postgres },
    hops,
    reference: REFERENCE.latencyMs,
  };
}

/**
 * Above this 1-minute load average at the start the machine is not quiet: figures taken on it say
 * more about the other work than about the systems compared, so the benchmark refuses to run unless
 * --allow-busy is given, and then marks its results as not quiet (text and JSON).
 */
const MAX_QUIET_LOAD = 1.5;

class NotQuietError extends Error {}

function checkQuiet(load: number): boolean {
  if (load <= MAX_QUIET_LOAD) return true;
  const why = `the 1-minute load average is ${load.toFixed(2)}, above ${MAX_QUIET_LOAD}: the machine is not quiet`;
  if (!args["allow-busy"]) {
    throw new NotQuietError(
      `${why}. Stop the other work (tests, builds) and run again, or pass --allow-busy`,
    );
  }
  log(`warning: ${why}; running anyway (--allow-busy): these figures are not comparable`);
  return false;
}

async function main(): Promise<void> {
  const started = performance.now();
  const runs = positiveInt("runs", args.runs);
  const tp: ThroughputOptions = { builds: positiveInt("builds", args.builds), chunk: 1000, concurrency: 50 };
  const latencyCount = positiveInt("latency", args.latency);
  const scaleMax = positiveInt("scale-max", args["scale-max"]);
  const recoveryTries = positiveInt("recovery-tries", args["recovery-tries"]);
  const oursDefaultTries = positiveInt("recovery-default-tries", args["recovery-default-tries"]);
  const bullmqDefaultTries = positiveInt(
    "recovery-bullmq-default-tries",
    args["recovery-bullmq-default-tries"],
  );
  const stopTries = positiveInt("stop-tries", args["stop-tries"]);
  const fanoutSeconds = positiveInt("fanout-seconds", args["fanout-seconds"]);
  const httpSeconds = positiveInt("http-seconds", args["http-seconds"]);
  const httpConnections = args["http-connections"]
    .split(",")
    .map((c) => positiveInt("http-connections", c.trim()));
  const httpReadQueue = positiveInt("http-read-queue", args["http-read-queue"]);
  const sseConnections = positiveInt("http-sse-connections", args["http-sse-connections"]);
  const sseClients = positiveInt("http-sse-clients", args["http-sse-clients"]);
  const sseSeconds = positiveInt("http-sse-seconds", args["http-sse-seconds"]);
  const sseRates = args["http-sse-rate"].split(",").map((r) => positiveInt("http-sse-rate", r.trim()));
  const httpSections = args["http-parts"].split(",").map((p) => {
    const name = p.trim();
    if (!(HTTP_SECTIONS as readonly string[]).includes(name)) {
      throw new Error(`--http-parts: unknown ${name} (${HTTP_SECTIONS.join(", ")})`);
    }
    return name as HttpSection;
  });
  const parts = selectedParts();
  const loadAverage: Record<string, number> = { start: os.loadavg()[0] ?? 0 };
  const quiet = checkQuiet(loadAverage.start ?? 0);
  const redis = await PrivateRedis.start();
  const cleanup = async () => {
    await stopRecoveryWorkers();
    await stopStopWorkers();
    await stopFanoutProducers();
    await stopHttpChildren();
    await stopIdleFleets();
    await stopLatencyWorkers();
    stopProcessWorkers();
    await redis.stop();
    await dropAllSchemas().catch((err: Error) => log(`could not drop the benchmark schemas: ${err.message}`));
  };
  const stopping = () => {
    log("interrupted: cleaning up");
    void cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", stopping);
  process.once("SIGTERM", stopping);
  try {
    const cpus = os.cpus();
    const machine = {
      os: `${os.type()} ${os.release()} (${os.platform()}/${os.arch()})`,
      cpuModel: cpus[0]?.model ?? "unknown",
      cpuCount: cpus.length,
      memoryGiB: os.totalmem() / 2 ** 30,
      node: process.version,
      redisServer: await redis.version(),
      postgres: await postgresVersion(),
    };
    log(`private redis-server ${machine.redisServer} on port ${redis.port}; PostgreSQL ${machine.postgres}`);

    let throughput: Results["throughput"] = null;
    if (parts.has("throughput")) throughput = await throughputPart(redis, tp, runs);
    let latency: Results["latency"] = null;
    if (parts.has("latency")) {
      loadAverage.latency = os.loadavg()[0] ?? 0;
      latency = await latencyPart(redis, latencyCount, 50);
    }
    let scale: Results["scale"] = null;
    if (parts.has("scale")) {
      loadAverage.scale = os.loadavg()[0] ?? 0;
      const sizes = scaleSizes(scaleMax);
      log(`scale: ${sizes.join(", ")} queued builds`);
      const chunk = 10_000;
      const steps = await runScale(redis, {
        sizes,
        chunk,
        positionSamples: 200,
        claimSamples: 100,
        fallbackSamples: 25,
        log,
      });
      scale = { chunk, steps };
    }
    let recovery: Results["recovery"] = null;
    if (parts.has("recovery")) {
      loadAverage.recovery = os.loadavg()[0] ?? 0;
      recovery = await runRecovery(redis, {
        tries: recoveryTries,
        oursDefaultTries,
        bullmqDefaultTries,
        log,
      });
    }
    let stop: Results["stop"] = null;
    if (parts.has("stop")) {
      loadAverage.stop = os.loadavg()[0] ?? 0;
      stop = await runStop(redis, { tries: stopTries, warmup: 10, pauseMs: 5, log });
    }
    let fanout: Results["fanout"] = null;
    if (parts.has("fanout")) {
      loadAverage.fanout = os.loadavg()[0] ?? 0;
      fanout = await runFanout(redis, {
        seconds: fanoutSeconds,
        warmupSeconds: 3,
        rate: 100,
        builds: 100,
        allBuildsSubscribers: 900,
        perBuildSubscribers: 100,
        progressIntervalMs: 200,
        drainMs: 5000,
        systems: FANOUT_SYSTEMS,
        log,
      });
    }
    let persistence: Results["persistence"] = null;
    if (parts.has("persistence")) {
      loadAverage.persistence = os.loadavg()[0] ?? 0;
      const tries = positiveInt("persistence-tries", args["persistence-tries"]);
      persistence = await runPersistence({
        builds: positiveInt("persistence-builds", args["persistence-builds"]),
        runs,
        everysecTries: tries,
        duringFsyncTries: tries,
        alwaysTries: Math.ceil(tries / 2),
        log,
      });
    }
    let http: Results["http"] = null;
    if (parts.has("http")) {
      loadAverage.http = os.loadavg()[0] ?? 0;
      http = await runHttp(redis, {
        modes: HTTP_MODES,
        sections: httpSections,
        seconds: httpSeconds,
        warmupSeconds: 2,
        connections: httpConnections,
        readQueue: httpReadQueue,
        sse: {
          connections: sseConnections,
          clients: sseClients,
          seconds: sseSeconds,
          warmupSeconds: 3,
          rates: sseRates,
          // As the library fan-out: 100 builds, each reporting once a second at 100 updates/s.
          builds: 100,
          progressIntervalMs: 200,
          drainMs: 5000,
          maxDrainMs: 120_000,
        },
        log,
      });
    }
    let idle: Results["idle"] = null;
    if (parts.has("idle")) {
      loadAverage.idle = os.loadavg()[0] ?? 0;
      idle = await runIdle(redis, {
        workers: positiveInt("idle-workers", args["idle-workers"]),
        settleSeconds: 10,
        windowSeconds: positiveInt("idle-seconds", args["idle-seconds"]),
        log,
      });
    }
    let processes: Results["processes"] = null;
    if (parts.has("processes")) {
      loadAverage.processes = os.loadavg()[0] ?? 0;
      log("processes: 1, 2 and 4 worker processes");
      processes = await runProcesses(redis, {
        builds: positiveInt("processes-builds", args["processes-builds"]),
        chunk: 1000,
        concurrencyPerProcess: 25,
        counts: [1, 2, 4],
        runs,
        log,
      });
    }
    let pressure: Results["pressure"] = null;
    if (parts.has("pressure")) {
      loadAverage.pressure = os.loadavg()[0] ?? 0;
      const [clean, xidHeld, readers] = args["pressure-seconds"]
        .split(",")
        .map((s) => positiveInt("pressure-seconds", s.trim()));
      if (clean === undefined || xidHeld === undefined || readers === undefined) {
        throw new Error("--pressure-seconds takes three numbers: clean,xidHeld,readers");
      }
      const systems = args["pressure-systems"].split(",").map((name) => {
        const system = name.trim();
        if (!(PRESSURE_SYSTEMS as readonly string[]).includes(system)) {
          throw new Error(`--pressure-systems: unknown ${system} (${PRESSURE_SYSTEMS.join(", ")})`);
        }
        return system as PressureSystem;
      });
      const offeredPerSec = Number(args["pressure-rate"]);
      if (!Number.isInteger(offeredPerSec) || offeredPerSec < 0) {
        throw new Error(
          `--pressure-rate: must be an integer >= 0 (0: keep a backlog), got ${args["pressure-rate"]}`,
        );
      }
      log(
        `pressure: clean ${clean} s, xid held ${xidHeld} s, readers ${readers} s per system${offeredPerSec ? `, ${offeredPerSec} jobs/s offered` : ""}`,
      );
      pressure = await runPressure({
        systems,
        phaseSeconds: { clean, xidHeld, readers },
        concurrency: tp.concurrency,
        offeredPerSec,
        redisUrl: redis.url,
        log,
      });
    }
    loadAverage.end = os.loadavg()[0] ?? 0;

    const partial: Omit<Results, "targets"> = {
      date: new Date().toISOString(),
      command: ["npm run bench", ...(process.argv.length > 2 ? ["--", ...process.argv.slice(2)] : [])].join(
        " ",
      ),
      options: { ...args, databaseUrl: DATABASE_URL.replace(/:[^:@/]*@/, ":***@") },
      machine,
      durationSec: (performance.now() - started) / 1000,
      throughput,
      latency,
      scale,
      recovery,
      stop,
      fanout,
      persistence,
      http,
      idle,
      processes,
      pressure,
      loadAverage,
      quiet,
      referenceNote: `reference figures are ${REFERENCE.note}`,
    };
    const results: Results = { ...partial, targets: evaluateTargets(partial) };
    process.stdout.write(args.json ? `${JSON.stringify(results, null, 2)}\n` : `${renderText(results)}\n`);
  } finally {
    process.removeListener("SIGINT", stopping);
    process.removeListener("SIGTERM", stopping);
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    if (err instanceof NotQuietError) {
      log(`benchmark refused: ${err.message}`);
      process.exit(2);
    }
    log(`benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  },
);
