/**
 * Idle cost (issue 15): what an idle fleet costs the stores and the machine. Ours is the real thing,
 * one `oculus up` and N `oculus worker --command true` processes (the built CLI) on a private
 * PostgreSQL cluster with pg_stat_statements and the benchmark's private Redis; BullMQ's is one
 * process holding a Queue and N processes each running a Worker (bench/idle-bullmq.ts). After the
 * fleet has settled, over one window: PostgreSQL statements per second (all of them, by statement),
 * Redis commands per second (INFO total_commands_processed), and each process's CPU (user + system
 * time from /proc, as a share of one core).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { freePort } from "../src/ops/scratch-redis.js";
import { PgCluster, pgClusterUnavailable } from "../test/helpers/pg-cluster.js";
import { spawnBenchScript } from "./child.js";
import { cpuMs } from "./proc.js";
import type { PrivateRedis } from "./redis-server.js";
import { sleep } from "./stats.js";

export interface IdleProcessCpu {
  role: "api" | "worker";
  /** CPU time over the window as a share of one core, in percent. */
  percent: number;
}

export interface IdleFleet {
  system: "ours (Redis mode)" | "BullMQ";
  processes: number;
  /** null for BullMQ (it has no PostgreSQL). */
  postgresStatementsPerSecond: number | null;
  /** The most frequent statements (first line of each), per second. */
  topStatements: { statement: string; perSecond: number }[];
  redisCommandsPerSecond: number;
  /** The most frequent Redis commands, per second. */
  topRedisCommands: { command: string; perSecond: number }[];
  cpu: IdleProcessCpu[];
}

export interface IdlePart {
  workers: number;
  settleSeconds: number;
  windowSeconds: number;
  fleets: IdleFleet[];
}

export interface IdleOptions {
  workers: number;
  settleSeconds: number;
  windowSeconds: number;
  log: (line: string) => void;
}

const children = new Set<ChildProcess>();

/** Ends every fleet process still running (the benchmark was interrupted). */
export async function stopIdleFleets(): Promise<void> {
  await Promise.all([...children].map((child) => endChild(child)));
}

export async function runIdle(redis: PrivateRedis, options: IdleOptions): Promise<IdlePart> {
  const unavailable = pgClusterUnavailable();
  if (unavailable) throw new Error(`idle: needs a private PostgreSQL cluster: ${unavailable}`);
  const fleets: IdleFleet[] = [];
  const cluster = await PgCluster.start({ settings: { shared_preload_libraries: "pg_stat_statements" } });
  try {
    await cluster.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    options.log(`idle: ours, 1 oculus up + ${options.workers} oculus worker`);
    fleets.push(await measureOurs(redis, cluster, options));
  } finally {
    await cluster.destroy();
  }
  options.log(`idle: BullMQ, 1 Queue process + ${options.workers} Worker processes`);
  fleets.push(await measureBullmq(redis, options));
  return {
    workers: options.workers,
    settleSeconds: options.settleSeconds,
    windowSeconds: options.windowSeconds,
    fleets,
  };
}

async function measureOurs(
  redis: PrivateRedis,
  cluster: PgCluster,
  options: IdleOptions,
): Promise<IdleFleet> {
  const port = await freePort();
  const env = {
    PATH: process.env.PATH ?? "",
    DATABASE_URL: cluster.url(),
    REDIS_URL: redis.url,
    OCULUS_PREFIX: "bench_idle",
    OCULUS_SCHEMA: "bench_idle",
    OCULUS_LOG_LEVEL: "warn",
  };
  const fleet: { role: IdleProcessCpu["role"]; child: ChildProcess }[] = [];
  try {
    fleet.push({ role: "api", child: spawnOculus(["up", "--port", String(port)], env) });
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/health`)).ok, 60_000, "oculus up");
    for (let i = 0; i < options.workers; i++) {
      fleet.push({
        role: "worker",
        child: spawnOculus(["worker", "--command", "true", "--id", `idle-${i}`], env),
      });
    }
    await waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/v1/workers`);
        const body = (await res.json()) as { workers: { status: string }[] };
        return body.workers.filter((w) => w.status === "active").length === options.workers;
      },
      60_000,
      `${options.workers} active workers`,
    );
    await sleep(options.settleSeconds * 1000);
    await cluster.sql("SELECT pg_stat_statements_reset()");
    const window = await measureWindow(redis, fleet, options.windowSeconds);
    const rows = await cluster.sql<{ query: string; calls: number }>(
      "SELECT query, calls::int AS calls FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC",
    );
    const total = rows.reduce((n, r) => n + r.calls, 0);
    return {
      system: "ours (Redis mode)",
      processes: fleet.length,
      postgresStatementsPerSecond: total / options.windowSeconds,
      topStatements: rows.slice(0, 8).map((r) => ({
        statement: r.query.replace(/\s+/g, " ").slice(0, 80),
        perSecond: r.calls / options.windowSeconds,
      })),
      ...window,
    };
  } finally {
    await Promise.all(fleet.map(({ child }) => endChild(child)));
  }
}

async function measureBullmq(redis: PrivateRedis, options: IdleOptions): Promise<IdleFleet> {
  const fleet: { role: IdleProcessCpu["role"]; child: ChildProcess }[] = [];
  const spawnRole = (role: IdleProcessCpu["role"]) => {
    const child = spawnBenchScript("idle-bullmq", [
      "--role",
      role,
      "--port",
      String(redis.port),
      "--queue",
      "bench-idle",
    ]);
    children.add(child);
    fleet.push({ role, child });
    return new Promise<void>((resolve, reject) => {
      child.stdout?.on("data", (d: Buffer) => {
        if (d.toString().includes("ready")) resolve();
      });
      child.once("exit", (code) => reject(new Error(`BullMQ ${role} process exited (${code})`)));
    });
  };
  try {
    await spawnRole("api");
    await Promise.all(Array.from({ length: options.workers }, () => spawnRole("worker")));
    await sleep(options.settleSeconds * 1000);
    const window = await measureWindow(redis, fleet, options.windowSeconds);
    return {
      system: "BullMQ",
      processes: fleet.length,
      postgresStatementsPerSecond: null,
      topStatements: [],
      ...window,
    };
  } finally {
    await Promise.all(fleet.map(({ child }) => endChild(child)));
  }
}

/** Redis commands and each process's CPU over one window. */
async function measureWindow(
  redis: PrivateRedis,
  fleet: { role: IdleProcessCpu["role"]; child: ChildProcess }[],
  seconds: number,
): Promise<Pick<IdleFleet, "redisCommandsPerSecond" | "topRedisCommands" | "cpu">> {
  const client = redis.client();
  try {
    const byCommandBefore = await commandCalls(client);
    const commandsBefore = await totalCommands(client);
    const cpuBefore = fleet.map(({ child }) => cpuMs(child.pid ?? 0));
    const started = performance.now();
    await sleep(seconds * 1000);
    const elapsedS = (performance.now() - started) / 1000;
    const cpuAfter = fleet.map(({ child }) => cpuMs(child.pid ?? 0));
    // Less the INFO that read the count before.
    const commands = (await totalCommands(client)) - commandsBefore - 1;
    const byCommandAfter = await commandCalls(client);
    const topRedisCommands = [...byCommandAfter]
      .map(([command, calls]) => ({
        command,
        perSecond: (calls - (byCommandBefore.get(command) ?? 0) - (command === "info" ? 3 : 0)) / elapsedS,
      }))
      .filter((c) => c.perSecond > 0)
      .sort((a, b) => b.perSecond - a.perSecond)
      .slice(0, 8);
    return {
      redisCommandsPerSecond: commands / elapsedS,
      topRedisCommands,
      cpu: fleet.map(({ role }, i) => ({
        role,
        percent: (100 * ((cpuAfter[i] ?? 0) - (cpuBefore[i] ?? 0))) / (elapsedS * 1000),
      })),
    };
  } finally {
    client.disconnect();
  }
}

/** Calls so far per command (INFO commandstats). */
async function commandCalls(client: ReturnType<PrivateRedis["client"]>): Promise<Map<string, number>> {
  const info = await client.info("commandstats");
  const calls = new Map<string, number>();
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls.set(m[1] ?? "", Number(m[2]));
  return calls;
}

async function totalCommands(client: ReturnType<PrivateRedis["client"]>): Promise<number> {
  const info = await client.info("stats");
  return Number(/total_commands_processed:(\d+)/.exec(info)?.[1] ?? Number.NaN);
}

/** The built `oculus` CLI (dist/src/cli/main.js next to dist/bench), or its source through tsx. */
function spawnOculus(args: string[], env: Record<string, string>): ChildProcess {
  const fromSource = import.meta.url.endsWith(".ts");
  const main = fileURLToPath(new URL(`../src/cli/main.${fromSource ? "ts" : "js"}`, import.meta.url));
  const nodeArgs = fromSource ? ["--import", "tsx", main] : [main];
  const child = spawn(process.execPath, [...nodeArgs, ...args], { env, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  child.once("exit", (code, signal) => {
    children.delete(child);
    if (code !== 0 && signal !== "SIGTERM" && code !== null) {
      process.stderr.write(`oculus ${args[0]} exited ${code}: ${stderr}\n`);
    }
  });
  children.add(child);
  return child;
}

/** SIGTERM, then SIGKILL after 15 s (a worker drains first); resolves once it has exited. */
function endChild(child: ChildProcess): Promise<void> {
  children.delete(child);
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill("SIGKILL"), 15_000);
    child.once("exit", () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`idle: ${what} not ready within ${timeoutMs / 1000} s`);
    await sleep(200);
  }
}
