/**
 * `npm run chaos [-- --json] [--only PHASE[,PHASE...]] [--phase-seconds N] [--settle-seconds N]
 *   [--workers N] [--capacity N] [--load-factor F] [--help]`
 *
 * A bounded fault suite against a private PostgreSQL cluster (its own initdb, fsync on) and a private
 * Redis (AOF everysec): two `oculus up --workers 0` and N `oculus worker --command` processes, builds
 * submitted over HTTP at a steady rate while one fault at a time is applied (bench/chaos/faults.ts).
 * Per phase: acknowledged, completed, lost, started more than once, processes that died, completed/s
 * and claim wait p99 against the clean phase, and time to recover (bench/chaos/measure.ts).
 * Exit code 1 when any phase lost a build, ran one twice or had a process die.
 */
import { mkdirSync, mkdtempSync } from "node:fs";
import os, { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../../src/ops/scratch-redis.js";
import { sleep } from "../stats.js";
import { type FaultContext, PHASE_NAMES, PHASES, type Phase } from "./faults.js";
import { Fleet, writeBuildScript } from "./fleet.js";
import { LoadGenerator } from "./load.js";
import { doubleRuns, rate, readRecord, readRuns, recoverySeconds, settle } from "./measure.js";
import { type ChaosResults, type PhaseResult, phaseOk, renderText } from "./report.js";
import { ChaosPostgres, ChaosRedis } from "./servers.js";

const HELP = `npm run chaos [-- options]

Fault phases against private PostgreSQL and Redis servers, with builds submitted over HTTP to two
\`oculus up\` and run by \`oculus worker --command\` processes. Phases (in this order):
  ${PHASE_NAMES.join(", ")}

  --json                 one JSON object on stdout (progress on stderr)
  --only P1,P2           run only these phases (clean always runs first: it calibrates the load
                         and is the reference)
  --phase-seconds N      fault window of each phase (default 15; pg-down is down 4x as long: 60 s)
  --settle-seconds N     how long the queue may take to drain after the load (default 30)
  --workers N            oculus worker processes (default 3)
  --capacity N           builds each worker runs at once (default 4)
  --load-factor F        steady submit rate as a fraction of the calibrated capacity (default 0.5)
  --help                 this text

Exit code 1 when a phase lost a build, started one more than once, or had a process die.`;

const { values: args } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    only: { type: "string" },
    "phase-seconds": { type: "string", default: "15" },
    "settle-seconds": { type: "string", default: "30" },
    workers: { type: "string", default: "3" },
    capacity: { type: "string", default: "4" },
    "load-factor": { type: "string", default: "0.5" },
    help: { type: "boolean", default: false },
  },
});

const log = (line: string) =>
  process.stderr.write(`[chaos ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

function positive(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${value}`);
  return n;
}

function selectedPhases(): Phase[] {
  if (args.only === undefined) return PHASES;
  const names = new Set(args.only.split(",").map((p) => p.trim()));
  for (const name of names) {
    if (!PHASE_NAMES.includes(name))
      throw new Error(`--only: unknown phase ${name} (${PHASE_NAMES.join(", ")})`);
  }
  return PHASES.filter((p) => p.name === "clean" || names.has(p.name));
}

interface Setup {
  postgres: ChaosPostgres;
  redis: ChaosRedis;
  runDir: string;
  buildScript: string;
  workers: number;
  capacity: number;
  phaseMs: number;
  settleMs: number;
  loadFactor: number;
}

/** Lead-in before the fault (steady load, warm pools) and the tail after it (recovery is measured there). */
const LEAD_MS = 3000;
const TAIL_MS = 8000;

/**
 * Calibration: for CALIBRATION_MS the queue is kept at least two builds deep per slot (topped up every
 * 200 ms), so that the fleet runs flat out; its completions a second over that span are its capacity.
 * A fixed backlog would drain for minutes on a loaded machine; this takes a bounded time.
 */
const CALIBRATION_MS = 15_000;

async function calibrate(setup: Setup, fleet: Fleet, database: string): Promise<number> {
  const slots = setup.workers * setup.capacity;
  const burst = new LoadGenerator(fleet.apiUrls, "chaos-calibration");
  log(`calibration: ${slots} slots kept busy for ${CALIBRATION_MS / 1000} s`);
  const start = Date.now();
  let completed = 0;
  while (Date.now() - start < CALIBRATION_MS) {
    const [row] = await setup.postgres.sql<{ queued: number; completed: number }>(
      database,
      `SELECT count(*) FILTER (WHERE status = 'queued')::int AS queued,
              count(*) FILTER (WHERE status = 'completed' AND finished_at >= to_timestamp($1::float8 / 1000))::int
                AS completed
       FROM oculus.builds`,
      [start],
    );
    completed = row?.completed ?? 0;
    const missing = 2 * slots - (row?.queued ?? 0);
    if (missing > 0) await burst.burst(missing, missing);
    await sleep(200);
  }
  const capacity = completed / ((Date.now() - start) / 1000);
  log(`calibration: ${capacity.toFixed(1)} builds/s; draining the rest`);
  await settle(setup.postgres, database, [...new Set(burst.stats.acks.map((a) => a.id))], 60_000);
  return Math.max(capacity, 0.5);
}

interface Reference {
  capacityPerSec: number;
  cleanRate: number;
}

async function runPhase(index: number, phase: Phase, setup: Setup, ref: Reference): Promise<PhaseResult> {
  const { postgres, redis } = setup;
  const database = `chaos_${index}_${phase.name.replace(/\W/g, "_")}`;
  const dir = path.join(setup.runDir, `${index}-${phase.name}`);
  mkdirSync(dir, { recursive: true });
  await postgres.ensureUp();
  await redis.ensureUp();
  await redis.command("FLUSHALL");
  await postgres.createDatabase(database);
  const fleet = new Fleet({
    databaseUrl: (name) => postgres.appUrl(database, name),
    redisUrl: redis.url,
    prefix: `chaos${index}`,
    apiPorts: [await freePort(), await freePort()],
    workers: setup.workers,
    capacity: setup.capacity,
    buildScript: setup.buildScript,
    dir,
  });
  const windowMs = setup.phaseMs * (phase.windowScale ?? 1);
  const result: PhaseResult = {
    name: phase.name,
    fault: phase.fault,
    windowSec: windowMs / 1000,
    submitRatePerSec: 0,
    acknowledged: 0,
    refused: {},
    completed: 0,
    failed: 0,
    stopped: 0,
    lost: 0,
    lostSample: [],
    doubleRun: 0,
    doubleSample: [],
    legitimateReruns: 0,
    runs: 0,
    died: 0,
    deaths: [],
    completedPerSec: Number.NaN,
    completedPerSecLoad: Number.NaN,
    vsClean: null,
    claimWaitP50Ms: Number.NaN,
    claimWaitP99Ms: Number.NaN,
    recoverSec: null,
    settleSec: 0,
    notes: [],
    details: {},
  };
  let load: LoadGenerator | undefined;
  try {
    log(`${phase.name}: starting 2 APIs and ${setup.workers} workers (database ${database})`);
    await fleet.start();
    if (phase.name === "clean") ref.capacityPerSec = await calibrate(setup, fleet, database);
    const steadyRate = ref.capacityPerSec * setup.loadFactor;
    result.submitRatePerSec = steadyRate;
    load = new LoadGenerator(fleet.apiUrls, `chaos-${phase.name}`);
    const ctx: FaultContext = {
      postgres,
      redis,
      fleet,
      load,
      database,
      windowMs,
      capacityPerSec: ref.capacityPerSec,
      steadyRate,
      log,
    };
    log(`${phase.name}: load ${steadyRate.toFixed(1)}/s; fault for ${windowMs / 1000} s: ${phase.fault}`);
    const loadStart = Date.now();
    load.setRate(steadyRate);
    await sleep(LEAD_MS);
    const faultStart = Date.now();
    const outcome = await phase.inject(ctx);
    const faultEnd = Date.now();
    result.notes.push(...outcome.notes);
    result.details = outcome.details;
    await sleep(TAIL_MS);
    const loadEnd = Date.now();
    const stats = await load.stop();
    const acked = [...new Set(stats.acks.map((a) => a.id))];
    result.acknowledged = acked.length;
    result.refused = stats.refused;
    log(`${phase.name}: ${acked.length} acknowledged; waiting for the queue to drain`);
    const settleMs = await settle(postgres, database, acked, setup.settleMs);
    result.settleSec = settleMs / 1000;
    const observedUntil = Date.now();
    const record = await readRecord(postgres, database, acked);
    Object.assign(result, {
      completed: record.completed,
      failed: record.failed,
      stopped: record.stopped,
      lost: record.lost,
      lostSample: record.lostSample,
      claimWaitP50Ms: record.claimWaitP50Ms,
      claimWaitP99Ms: record.claimWaitP99Ms,
    });
    result.completedPerSec = rate(record.completions, faultStart, faultEnd);
    result.completedPerSecLoad = rate(record.completions, loadStart, loadEnd);
    if (phase.name === "clean") {
      ref.cleanRate = result.completedPerSec;
      result.vsClean = 1;
    } else {
      result.vsClean = ref.cleanRate > 0 ? result.completedPerSec / ref.cleanRate : null;
      result.recoverSec = recoverySeconds(record.completions, faultEnd, observedUntil, ref.cleanRate);
    }
    result.details = { ...result.details, faultStart, faultEnd, loadStart, loadEnd, retried: record.retried };
  } catch (err) {
    result.error = err instanceof Error ? err.message : String(err);
    log(`${phase.name}: harness error: ${result.error}`);
    await load?.stop();
  } finally {
    await fleet.stop();
  }
  const runs = doubleRuns(readRuns(dir), fleet.exits, []);
  Object.assign(result, {
    doubleRun: runs.doubleRun,
    doubleSample: runs.doubleSample,
    legitimateReruns: runs.legitimateReruns,
    runs: runs.runs,
  });
  result.deaths = fleet.deaths.map((d) => ({
    name: d.name,
    code: d.code,
    signal: d.signal,
    reason: d.reason,
  }));
  result.died = fleet.deaths.length;
  log(
    `${phase.name}: ${result.completed}/${result.acknowledged} completed, lost ${result.lost}, double ${result.doubleRun}, died ${result.died}, ${result.completedPerSec.toFixed(1)}/s`,
  );
  return result;
}

async function main(): Promise<number> {
  if (args.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const started = Date.now();
  const loadAverageStart = os.loadavg()[0] ?? 0;
  const phases = selectedPhases();
  const runDir = mkdtempSync(path.join(tmpdir(), "oculus-chaos-"));
  const stopping = () => {
    log("interrupted: killing every process and server");
    process.exit(130);
  };
  process.once("SIGINT", stopping);
  process.once("SIGTERM", stopping);
  log(`private PostgreSQL (fsync on) and Redis (AOF everysec); logs in ${runDir}`);
  const [postgres, redis] = await Promise.all([ChaosPostgres.start(), ChaosRedis.start()]);
  try {
    const setup: Setup = {
      postgres,
      redis,
      runDir,
      buildScript: writeBuildScript(runDir),
      workers: positive("workers", args.workers),
      capacity: positive("capacity", args.capacity),
      phaseMs: positive("phase-seconds", args["phase-seconds"]) * 1000,
      settleMs: positive("settle-seconds", args["settle-seconds"]) * 1000,
      loadFactor: positive("load-factor", args["load-factor"]),
    };
    const ref: Reference = { capacityPerSec: 0, cleanRate: 0 };
    const results: PhaseResult[] = [];
    for (const [i, phase] of phases.entries()) results.push(await runPhase(i + 1, phase, setup, ref));
    const [pgVersion] = await postgres
      .sql<{ v: string }>("postgres", "SELECT current_setting('server_version') AS v")
      .catch(() => []);
    const chaos: ChaosResults = {
      date: new Date().toISOString(),
      command: ["npm run chaos", ...(process.argv.length > 2 ? ["--", ...process.argv.slice(2)] : [])].join(
        " ",
      ),
      machine: {
        nproc: os.cpus().length,
        loadAverageStart,
        loadAverageEnd: os.loadavg()[0] ?? 0,
        node: process.version,
        postgres: (pgVersion as { v?: string } | undefined)?.v ?? "unknown",
        redis: await redis.version().catch(() => "unknown"),
      },
      options: { ...args },
      capacityPerSec: ref.capacityPerSec,
      steadyRatePerSec: ref.capacityPerSec * setup.loadFactor,
      durationSec: (Date.now() - started) / 1000,
      runDir,
      phases: results,
      ok: results.every(phaseOk),
    };
    process.stdout.write(args.json ? `${JSON.stringify(chaos, null, 2)}\n` : `${renderText(chaos)}\n`);
    return chaos.ok ? 0 : 1;
  } finally {
    postgres.destroy();
    await redis.destroy();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    log(`chaos failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(2);
  },
);
