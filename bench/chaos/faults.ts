/**
 * The phases: one fault each, named after the scenarios of the public PostgreSQL job-queue benchmarks
 * (an xid held open, analytics readers, sustained overload, connections killed, the pool exhausted,
 * the server restarting or away), plus the Redis and process faults of our own design.
 *
 * A fault runs for its window (`inject` resolves when the fault is over: the server is back, the
 * transaction released, the limit lifted) while the load generator keeps submitting at the steady
 * rate. What it saw on the way goes into `notes` (and `details` for --json).
 */
import { closeSync, openSync, readSync, statSync } from "node:fs";
import type pg from "pg";
import { sleep } from "../stats.js";
import type { Fleet } from "./fleet.js";
import type { LoadGenerator } from "./load.js";
import { APP_ROLE, type ChaosPostgres, type ChaosRedis } from "./servers.js";

export interface FaultContext {
  postgres: ChaosPostgres;
  redis: ChaosRedis;
  fleet: Fleet;
  load: LoadGenerator;
  /** The phase's database. */
  database: string;
  /** The fault window, ms (the down phase's outage is this long). */
  windowMs: number;
  /** Builds a second the fleet completes flat out (the calibration). */
  capacityPerSec: number;
  /** The steady submit rate. */
  steadyRate: number;
  log: (line: string) => void;
}

export interface FaultOutcome {
  notes: string[];
  details: Record<string, unknown>;
}

export interface Phase {
  name: string;
  /** What is done to the system, for the report. */
  fault: string;
  /** The window in units of --phase-seconds (the down phase: its 60 s are 4 units of the default 15). */
  windowScale?: number;
  inject(ctx: FaultContext): Promise<FaultOutcome>;
}

const none = (): FaultOutcome => ({ notes: [], details: {} });

export interface TableStats {
  table: string;
  live: number;
  dead: number;
  bytes: number;
}

/** Dead tuples and sizes of the queue's tables (pg_stat_user_tables; PostgreSQL's counters lag by ~1 s). */
export async function tableStats(ctx: FaultContext): Promise<TableStats[]> {
  const rows = await ctx.postgres.sql<{ table: string; live: string; dead: string; bytes: string }>(
    ctx.database,
    `SELECT relname AS table, n_live_tup AS live, n_dead_tup AS dead, pg_total_relation_size(relid) AS bytes
     FROM pg_stat_user_tables WHERE schemaname = 'oculus' AND relname IN ('builds', 'build_events', 'workers')
     ORDER BY relname`,
  );
  return rows.map((r) => ({
    table: r.table,
    live: Number(r.live),
    dead: Number(r.dead),
    bytes: Number(r.bytes),
  }));
}

function statsNote(stats: TableStats[]): string {
  return stats
    .map((s) => `${s.table} ${s.dead} dead/${s.live} live ${(s.bytes / 1024).toFixed(0)} KiB`)
    .join(", ");
}

/** Runs `step` every `everyMs` until `ms` have passed (a step in progress is awaited). */
async function repeatFor(ms: number, everyMs: number, step: () => Promise<void>): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const started = Date.now();
    await step();
    await sleep(Math.max(0, Math.min(end - Date.now(), everyMs - (Date.now() - started))));
  }
}

function logSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** Lines matching `pattern` written to `file` after byte `from`. */
function countInLog(file: string, from: number, pattern: RegExp): number {
  const size = logSize(file);
  if (size <= from) return 0;
  const buffer = Buffer.alloc(Math.min(size - from, 64 * 2 ** 20));
  const fd = openSync(file, "r");
  try {
    readSync(fd, buffer, 0, buffer.length, from);
  } finally {
    closeSync(fd);
  }
  return buffer
    .toString("utf8")
    .split("\n")
    .filter((line) => pattern.test(line)).length;
}

/** Commands Redis has refused with OOM since it started (INFO errorstats). */
async function oomRefusals(redis: ChaosRedis): Promise<number> {
  const info = String(await redis.command("INFO", "errorstats"));
  return Number(/errorstat_OOM:count=(\d+)/.exec(info)?.[1] ?? 0);
}

async function closeAll(clients: pg.Client[]): Promise<void> {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
}

export const PHASES: Phase[] = [
  {
    name: "clean",
    fault: "none (the reference for completed/s and claim wait)",
    inject: async (ctx) => {
      await sleep(ctx.windowMs);
      return none();
    },
  },
  {
    name: "idle-in-transaction",
    fault:
      "one session holds an xid (BEGIN; SELECT txid_current()) for the window: vacuum cannot remove dead rows",
    inject: async (ctx) => {
      const client = await ctx.postgres.client(ctx.database);
      try {
        await client.query("BEGIN");
        const [row] = (await client.query<{ xid: string }>("SELECT txid_current() AS xid")).rows;
        await sleep(ctx.windowMs);
        const stats = await tableStats(ctx);
        await client.query("ROLLBACK");
        return { notes: [`held xid ${row?.xid}: ${statsNote(stats)}`], details: { tables: stats } };
      } finally {
        await client.end().catch(() => undefined);
      }
    },
  },
  {
    name: "readers",
    fault:
      "four REPEATABLE READ sessions loop count(*) over builds and build_events, each holding its snapshot",
    inject: async (ctx) => {
      const clients = await Promise.all([1, 2, 3, 4].map(() => ctx.postgres.client(ctx.database)));
      let scans = 0;
      try {
        const end = Date.now() + ctx.windowMs;
        await Promise.all(
          clients.map(async (client) => {
            await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ");
            while (Date.now() < end) {
              await client.query("SELECT count(*) FROM oculus.builds");
              await client.query("SELECT count(*) FROM oculus.build_events");
              scans += 2;
              await sleep(50);
            }
          }),
        );
        const stats = await tableStats(ctx);
        return { notes: [`${scans} scans; ${statsNote(stats)}`], details: { scans, tables: stats } };
      } finally {
        await closeAll(clients);
      }
    },
  },
  {
    name: "load-1.5x",
    fault: "submits at 1.5x the calibrated capacity for the window",
    inject: async (ctx) => {
      ctx.load.setRate(ctx.capacityPerSec * 1.5);
      await sleep(ctx.windowMs);
      ctx.load.setRate(ctx.steadyRate);
      return { notes: [`${(ctx.capacityPerSec * 1.5).toFixed(1)} submits/s`], details: {} };
    },
  },
  {
    name: "terminate-backends",
    fault: "pg_terminate_backend of one of the app's backends (role oculus) five times a second",
    inject: async (ctx) => {
      const admin = await ctx.postgres.client("postgres");
      let terminated = 0;
      try {
        await repeatFor(ctx.windowMs, 200, async () => {
          const res = await admin.query<{ n: number }>(
            `SELECT count(pg_terminate_backend(pid))::int AS n FROM (
               SELECT pid FROM pg_stat_activity WHERE usename = $1 AND datname = $2 ORDER BY random() LIMIT 1) p`,
            [APP_ROLE, ctx.database],
          );
          terminated += res.rows[0]?.n ?? 0;
        });
      } finally {
        await admin.end().catch(() => undefined);
      }
      return { notes: [`${terminated} backends terminated`], details: { terminated } };
    },
  },
  {
    name: "pool-exhaustion",
    fault:
      "idle connections opened (and topped up) until max_connections - 3 (the superuser reserve) are taken",
    inject: async (ctx) => {
      const holders: pg.Client[] = [];
      const admin = await ctx.postgres.client("postgres");
      const logStart = logSize(ctx.postgres.cluster.logFile);
      try {
        const target = ctx.postgres.maxConnections - 3;
        await repeatFor(ctx.windowMs, 500, async () => {
          const res = await admin.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend'",
          );
          const missing = target - (res.rows[0]?.n ?? target);
          for (let i = 0; i < missing; i++) {
            const client = await ctx.postgres.client(ctx.database).catch(() => undefined);
            if (!client) break;
            holders.push(client);
          }
        });
      } finally {
        await admin.end().catch(() => undefined);
        await closeAll(holders);
      }
      // What the app was told when it asked for a connection: PostgreSQL logs each refusal.
      const refused = countInLog(
        ctx.postgres.cluster.logFile,
        logStart,
        /remaining connection slots|too many clients/,
      );
      return {
        notes: [`${holders.length} idle connections held; ${refused} connections refused to the app`],
        details: { held: holders.length, refusedToApp: refused },
      };
    },
  },
  {
    name: "pg-restart",
    fault: "pg_ctl restart -m fast, then half a window later -m immediate (a crash: WAL replay)",
    inject: async (ctx) => {
      const t0 = Date.now();
      await ctx.postgres.pgCtl(["restart", "-m", "fast"]);
      const fastMs = Date.now() - t0;
      await sleep(ctx.windowMs / 2);
      const t1 = Date.now();
      await ctx.postgres.pgCtl(["restart", "-m", "immediate"]);
      const immediateMs = Date.now() - t1;
      await sleep(ctx.windowMs / 2);
      return {
        notes: [`restarts took ${fastMs} ms (fast), ${immediateMs} ms (immediate)`],
        details: { fastMs, immediateMs },
      };
    },
  },
  {
    name: "pg-down",
    fault: "pg_ctl stop -m fast, down for the window (60 s by default), then start",
    windowScale: 4,
    inject: async (ctx) => {
      await ctx.postgres.pgCtl(["stop", "-m", "fast"]);
      await sleep(ctx.windowMs);
      await ctx.postgres.pgCtl(["start"]);
      return { notes: [`down ${Math.round(ctx.windowMs / 1000)} s`], details: {} };
    },
  },
  {
    name: "pg-read-only",
    fault:
      "PostgreSQL read-only for the window (default_transaction_read_only, as a standby after a failover), then writable",
    inject: async (ctx) => {
      await ctx.postgres.cluster.setReadOnly(true);
      await sleep(ctx.windowMs);
      await ctx.postgres.cluster.setReadOnly(false);
      return { notes: ["writes refused with 25006 for the window"], details: {} };
    },
  },
  {
    name: "pg-down-restarts",
    fault:
      "PostgreSQL stopped; one worker and one `oculus up` killed and started again while it is away (as a supervisor does); started after the window",
    inject: async (ctx) => {
      await ctx.postgres.pgCtl(["stop", "-m", "fast"]);
      await sleep(1000);
      const worker = ctx.fleet.workers.find((w) => w.alive);
      await worker?.kill9(true);
      const api = ctx.fleet.apis[1];
      if (api) {
        await api.kill9(false);
        api.resume();
      }
      await sleep(Math.max(0, ctx.windowMs - 1000));
      await ctx.postgres.pgCtl(["start"]);
      return { notes: ["a worker and an API process started while PostgreSQL was down"], details: {} };
    },
  },
  {
    name: "redis-kill",
    fault: "kill -9 of redis-server, restarted on its AOF 3 s later; twice in the window",
    inject: async (ctx) => {
      for (let i = 0; i < 2; i++) {
        await ctx.redis.kill();
        await sleep(3000);
        await ctx.redis.restart();
        await sleep(Math.max(0, ctx.windowMs / 2 - 3000));
      }
      return none();
    },
  },
  {
    name: "redis-sleep",
    fault: "DEBUG SLEEP 5 (Redis hung, not dead) every 8 s through the window",
    inject: async (ctx) => {
      let sleeps = 0;
      await repeatFor(ctx.windowMs, 8000, async () => {
        await ctx.redis.command("DEBUG", "SLEEP", "5");
        sleeps += 1;
      });
      return { notes: [`${sleeps} sleeps of 5 s`], details: { sleeps } };
    },
  },
  {
    name: "redis-oom",
    // Below used_memory: a limit 32 KiB above it, or equal to it, was never reached at this load (Redis
    // refused 0 writes in 15 s); the state to test is "reached": reads answered, writes refused.
    fault:
      "maxmemory set to half of used_memory with noeviction for the window (writes refused with OOM), then lifted",
    inject: async (ctx) => {
      const oomBefore = await oomRefusals(ctx.redis);
      const limit = Math.floor((await ctx.redis.usedMemory()) / 2);
      await ctx.redis.command("CONFIG", "SET", "maxmemory-policy", "noeviction");
      await ctx.redis.command("CONFIG", "SET", "maxmemory", limit);
      await sleep(ctx.windowMs);
      await ctx.redis.command("CONFIG", "SET", "maxmemory", "0");
      const refused = (await oomRefusals(ctx.redis)) - oomBefore;
      return {
        notes: [`limit ${(limit / 2 ** 20).toFixed(2)} MiB; Redis refused ${refused} commands with OOM`],
        details: { limitBytes: limit, oomRefusals: refused },
      };
    },
  },
  {
    name: "redis-readonly",
    fault:
      "Redis made a replica of an unreachable master for the window (writes refused with READONLY, as an old master back after a promotion), then a master again",
    inject: async (ctx) => {
      await ctx.redis.command("REPLICAOF", "127.0.0.1", "1");
      await sleep(ctx.windowMs);
      await ctx.redis.command("REPLICAOF", "NO", "ONE");
      return { notes: ["REPLICAOF 127.0.0.1 1, then REPLICAOF NO ONE"], details: {} };
    },
  },
  {
    name: "worker-kill",
    fault: "kill -9 of a random worker every 3 s (started again at once, so the capacity stays)",
    inject: async (ctx) => {
      let kills = 0;
      await repeatFor(ctx.windowMs, 3000, async () => {
        const alive = ctx.fleet.workers.filter((w) => w.alive);
        const victim = alive[Math.floor(Math.random() * alive.length)];
        if (!victim) return;
        await victim.kill9(true);
        kills += 1;
      });
      return { notes: [`${kills} workers killed`], details: { kills } };
    },
  },
  {
    name: "api-kill",
    fault:
      "kill -9 of one of the two `oculus up` for the window (submits go to the other), then started again",
    inject: async (ctx) => {
      const victim = ctx.fleet.apis[0];
      if (!victim) return none();
      await victim.kill9(false);
      await sleep(ctx.windowMs);
      victim.resume();
      return none();
    },
  },
];

export const PHASE_NAMES = PHASES.map((p) => p.name);
