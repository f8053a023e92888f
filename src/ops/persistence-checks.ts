/**
 * Is this Redis set up and healthy for keeping the build queue's index across restarts? Reads CONFIG
 * GET and INFO (and, when readable, the Redis log) and judges each fact: pass, warn or fail, with what
 * it means for the queue and how to fix it. `oculus doctor` prints the report; PersistenceMonitor
 * runs it periodically. A managed Redis that refuses CONFIG gets a warning and the checks INFO can
 * still answer, never a crash.
 */
import type { Redis } from "ioredis";
import { type ConfigRead, readConfig, readInfo, serverNowSec } from "./redis-admin.js";
import { type LastStart, readLastStart } from "./redis-log.js";

export type CheckStatus = "pass" | "warn" | "fail";

export interface PersistenceCheck {
  /** Stable identifier (a Redis setting or INFO field name where there is one). */
  name: string;
  status: CheckStatus;
  /** What was read (null when it could not be read). */
  value: string | number | null;
  /** What the value means for the queue. */
  message: string;
  /** What to do about it (null when nothing). */
  fix: string | null;
}

export interface PersistenceReport {
  /** The worst status of the checks. */
  status: CheckStatus;
  checks: PersistenceCheck[];
  /** ISO timestamp of this process's clock when the checks ran. */
  checkedAt: string;
}

export interface PersistenceCheckOptions {
  /** A replica whose lag (or a master link silent for) more than this many seconds is a warning. Default 10. */
  maxReplicaLagSec?: number;
  /** Age of the last successful RDB snapshot (with changes since) that is a warning. Default: twice the
   * longest `save` interval, or 2 hours when that is unknown. */
  maxSaveAgeSec?: number;
  /** A rewrite running longer than this is a warning. Default 600. */
  maxRewriteSec?: number;
  /** Read the Redis log (CONFIG GET logfile) for what happened at the last start. Default true. */
  readLog?: boolean;
}

/** Everything the checks judge, as read from the server. */
export interface PersistenceFacts {
  info: Map<string, string>;
  config: ConfigRead;
  lastStart: LastStart;
}

const CONFIG_NAMES = [
  "appendonly",
  "appendfsync",
  "maxmemory-policy",
  "no-appendfsync-on-rewrite",
  "aof-load-truncated",
  "save",
  "logfile",
  "dir",
] as const;

const RANK: Record<CheckStatus, number> = { pass: 0, warn: 1, fail: 2 };

/** 0 pass, 1 warn, 2 fail: for gauges (`/metrics`). */
export function checkStatusCode(status: CheckStatus): number {
  return RANK[status];
}

export function worstStatus(statuses: Iterable<CheckStatus>): CheckStatus {
  let worst: CheckStatus = "pass";
  for (const s of statuses) if (RANK[s] > RANK[worst]) worst = s;
  return worst;
}

/** Reads the facts from `redis` and judges them. Throws only when Redis cannot be asked at all. */
export async function checkPersistence(
  redis: Redis,
  options: PersistenceCheckOptions = {},
): Promise<PersistenceReport> {
  const [info, config] = await Promise.all([readInfo(redis), readConfig(redis, CONFIG_NAMES)]);
  const logfile = config.ok ? config.values.get("logfile") : undefined;
  const lastStart =
    options.readLog === false
      ? ({ readable: false, reason: "not asked to read the log" } as const)
      : await readLastStart(
          logfile,
          config.ok ? config.values.get("dir") : undefined,
          info.get("process_id"),
        );
  return evaluatePersistence({ info, config, lastStart }, options);
}

/** The judgement alone, from facts already read. */
export function evaluatePersistence(
  facts: PersistenceFacts,
  options: PersistenceCheckOptions = {},
  checkedAt = new Date(),
): PersistenceReport {
  const f = new Facts(facts);
  const checks = [
    versionCheck(f),
    configAccessCheck(f),
    appendonlyCheck(f),
    appendfsyncCheck(f),
    maxmemoryPolicyCheck(f),
    ...(f.configOk ? [rewriteFsyncCheck(f), loadTruncatedCheck(f)] : []),
    statusCheck(f, "aof_last_write_status", AOF_WRITE_FAILED),
    statusCheck(f, "aof_last_bgrewrite_status", AOF_REWRITE_FAILED),
    statusCheck(f, "rdb_last_bgsave_status", RDB_SAVE_FAILED),
    rewriteInProgressCheck(f, options.maxRewriteSec ?? 600),
    delayedFsyncCheck(f),
    loadingCheck(f),
    lastSaveCheck(f, options.maxSaveAgeSec),
    replicationCheck(f, options.maxReplicaLagSec ?? 10),
    lastStartCheck(facts.lastStart),
  ];
  return { status: worstStatus(checks.map((c) => c.status)), checks, checkedAt: checkedAt.toISOString() };
}

/** Typed access to INFO fields and settings; a setting falls back to INFO where INFO has it. */
class Facts {
  constructor(private readonly facts: PersistenceFacts) {}

  get configOk(): boolean {
    return this.facts.config.ok;
  }

  get infoMap(): Map<string, string> {
    return this.facts.info;
  }

  info(field: string): string | undefined {
    return this.facts.info.get(field);
  }

  num(field: string): number {
    return Number(this.facts.info.get(field) ?? Number.NaN);
  }

  /** A setting from CONFIG GET; without CONFIG, from INFO where INFO carries it. */
  setting(name: (typeof CONFIG_NAMES)[number]): string | undefined {
    if (this.facts.config.ok) return this.facts.config.values.get(name);
    if (name === "appendonly") {
      const enabled = this.info("aof_enabled");
      return enabled === undefined ? undefined : enabled === "1" ? "yes" : "no";
    }
    if (name === "maxmemory-policy") return this.info("maxmemory_policy");
    return undefined;
  }

  get aofOn(): boolean {
    return this.setting("appendonly") === "yes";
  }

  get configReason(): string {
    return this.facts.config.ok ? "" : this.facts.config.reason;
  }
}

function check(
  name: string,
  status: CheckStatus,
  value: string | number | null | undefined,
  message: string,
  fix: string | null = null,
): PersistenceCheck {
  return { name, status, value: value ?? null, message, fix };
}

/** Where a setting changed at run time must also go, or the next restart undoes it. */
const PERSIST_IT = "and set it in redis.conf (see deploy/redis/production.conf), or a restart undoes it";

function unreadable(name: string, f: Facts): PersistenceCheck {
  return check(
    name,
    "warn",
    null,
    `could not be read: CONFIG is refused here (${f.configReason})`,
    `check ${name} in your Redis provider's settings`,
  );
}

function versionCheck(f: Facts): PersistenceCheck {
  const version = f.info("redis_version") ?? "unknown";
  const major = Number(version.split(".")[0]);
  if (major >= 7) return check("redis_version", "pass", version, "Redis 7: multi-part AOF in appenddirname");
  return check(
    "redis_version",
    "warn",
    version,
    "older than Redis 7: the AOF is one file, and `oculus backup` and these docs assume Redis 7",
    "upgrade to Redis 7",
  );
}

function configAccessCheck(f: Facts): PersistenceCheck {
  if (f.configOk) return check("config", "pass", "available", "CONFIG GET answers: every setting was read");
  return check(
    "config",
    "warn",
    "refused",
    `CONFIG is disabled or renamed (${f.configReason}), as managed Redis services do: appendfsync, ` +
      "no-appendfsync-on-rewrite, aof-load-truncated and save could not be read; appendonly and " +
      "maxmemory-policy come from INFO",
    "check those settings in your provider's console; `oculus backup` takes an RDB snapshot over the " +
      "connection there",
  );
}

function appendonlyCheck(f: Facts): PersistenceCheck {
  const value = f.setting("appendonly");
  if (value === undefined) return unreadable("appendonly", f);
  if (value === "yes") {
    return check("appendonly", "pass", value, "AOF on: every write is logged and replayed at restart");
  }
  return check(
    "appendonly",
    "fail",
    value,
    "AOF is off: a restart or crash loses every write since the last RDB snapshot, and the queue " +
      "has to rebuild its index from PostgreSQL",
    `CONFIG SET appendonly yes (Redis writes the new AOF in the background), ${PERSIST_IT}`,
  );
}

function appendfsyncCheck(f: Facts): PersistenceCheck {
  const value = f.setting("appendfsync");
  if (value === undefined) return unreadable("appendfsync", f);
  if (!f.aofOn) return check("appendfsync", "pass", value, "not used while the AOF is off");
  if (value === "everysec") {
    return check(
      "appendfsync",
      "pass",
      value,
      "fsync once a second: a machine crash loses about 1 s of writes, and while an fsync runs (long " +
        "on a busy disk) Redis holds new acknowledged writes in memory for up to 2 s, lost even on kill -9 " +
        "(the queue restores its index from PostgreSQL)",
    );
  }
  if (value === "always") {
    return check(
      "appendfsync",
      "pass",
      value,
      "fsync before every reply: the safest, slowest on a busy disk",
    );
  }
  return check(
    "appendfsync",
    "warn",
    value,
    "the kernel decides when to write the AOF to disk (about every 30 s on Linux): a machine crash " +
      "or power loss loses that much",
    `CONFIG SET appendfsync everysec, ${PERSIST_IT}`,
  );
}

function maxmemoryPolicyCheck(f: Facts): PersistenceCheck {
  const value = f.setting("maxmemory-policy");
  if (value === undefined) return unreadable("maxmemory-policy", f);
  if (value === "noeviction") {
    return check(
      "maxmemory-policy",
      "pass",
      value,
      "a full Redis refuses writes (OOM error) instead of deleting keys; the queue then serves from PostgreSQL",
    );
  }
  return check(
    "maxmemory-policy",
    "fail",
    value,
    "Redis deletes keys when it reaches maxmemory: queue index entries, worker heartbeats and the " +
      "index marker would disappear without an error",
    `CONFIG SET maxmemory-policy noeviction, ${PERSIST_IT}`,
  );
}

function rewriteFsyncCheck(f: Facts): PersistenceCheck {
  const value = f.setting("no-appendfsync-on-rewrite");
  if (value !== "yes") {
    return check(
      "no-appendfsync-on-rewrite",
      "pass",
      value,
      "the AOF is still fsynced while a rewrite or snapshot runs (safe; writes may wait on a busy disk)",
    );
  }
  return check(
    "no-appendfsync-on-rewrite",
    "warn",
    value,
    "while a rewrite or RDB snapshot runs the AOF is not fsynced: a machine crash then loses up to " +
      "about 30 s of writes (Linux defaults)",
    `CONFIG SET no-appendfsync-on-rewrite no, ${PERSIST_IT}`,
  );
}

function loadTruncatedCheck(f: Facts): PersistenceCheck {
  const value = f.setting("aof-load-truncated");
  if (value !== "no") {
    return check(
      "aof-load-truncated",
      "pass",
      value,
      "after a crash that cut the AOF's last command short, Redis drops that command, loads the rest " +
        "and logs it",
    );
  }
  return check(
    "aof-load-truncated",
    "warn",
    value,
    "after a crash that cut the AOF's tail Redis refuses to start until someone runs " +
      "redis-check-aof --fix (the queue serves from PostgreSQL meanwhile)",
    `CONFIG SET aof-load-truncated yes, ${PERSIST_IT}`,
  );
}

interface FailedStatus {
  message: string;
  fix: string;
}

const AOF_WRITE_FAILED: FailedStatus = {
  message:
    "the last write to the AOF failed (disk full, permissions, I/O error): Redis refuses writes until " +
    "one succeeds, and the queue serves from PostgreSQL meanwhile",
  fix: "read the Redis log; check the data directory's disk (df -h, dmesg)",
};
const AOF_REWRITE_FAILED: FailedStatus = {
  message: "the last AOF rewrite failed (fork or disk error): the AOF keeps growing and restarts get slower",
  fix: "read the Redis log; free disk space and memory for the fork (vm.overcommit_memory = 1); BGREWRITEAOF to retry",
};
const RDB_SAVE_FAILED: FailedStatus = {
  message:
    "the last RDB snapshot failed: with stop-writes-on-bgsave-error yes (the default) Redis refuses " +
    "writes until a snapshot succeeds",
  fix: "read the Redis log; check disk space and permissions of the data directory and memory for the fork; BGSAVE to retry",
};

function statusCheck(f: Facts, field: string, failed: FailedStatus): PersistenceCheck {
  const value = f.info(field);
  if (value === undefined) return check(field, "warn", null, "not reported by this Redis", null);
  if (value === "ok") return check(field, "pass", value, "ok");
  return check(field, "fail", value, failed.message, failed.fix);
}

function rewriteInProgressCheck(f: Facts, maxSec: number): PersistenceCheck {
  const running = f.info("aof_rewrite_in_progress") === "1";
  const scheduled = f.info("aof_rewrite_scheduled") === "1";
  if (!running) {
    const note = scheduled
      ? "a rewrite is scheduled (it waits for a running RDB snapshot)"
      : "no rewrite running";
    return check("aof_rewrite_in_progress", "pass", 0, note);
  }
  const seconds = f.num("aof_current_rewrite_time_sec");
  if (!(seconds > maxSec)) {
    return check(
      "aof_rewrite_in_progress",
      "pass",
      1,
      `a rewrite has run for ${seconds} s (normal; \`oculus backup\` waits for it to end)`,
    );
  }
  return check(
    "aof_rewrite_in_progress",
    "warn",
    1,
    `a rewrite has run for ${seconds} s: a slow disk, or little memory for the fork`,
    "watch aof_current_rewrite_time_sec and the disk's latency (iostat -x 1)",
  );
}

function delayedFsyncCheck(f: Facts): PersistenceCheck {
  const count = f.num("aof_delayed_fsync");
  if (!(count > 0)) return check("aof_delayed_fsync", "pass", 0, "the disk has kept up with the fsyncs");
  return check(
    "aof_delayed_fsync",
    "warn",
    count,
    `${count} times since start the disk was too slow for appendfsync everysec: Redis then held ` +
      "acknowledged writes in memory for up to 2 s, and a kill -9, OOM kill or crash at such a moment " +
      "loses them (the queue restores its index from PostgreSQL)",
    "give the data directory a disk of its own or a faster one; find the other writers (iostat -x 1)",
  );
}

function loadingCheck(f: Facts): PersistenceCheck {
  if (f.info("loading") !== "1") return check("loading", "pass", 0, "the dataset is loaded");
  const done = f.info("loading_loaded_perc") ?? "?";
  const eta = f.info("loading_eta_seconds") ?? "?";
  return check(
    "loading",
    "warn",
    1,
    `Redis is loading its data (${done} % done, about ${eta} s left): it answers LOADING errors, and ` +
      "the queue serves from PostgreSQL until it is done",
    "wait; a large AOF loads faster after a rewrite (BGREWRITEAOF)",
  );
}

/** The longest interval of a `save` setting ("3600 1 300 100" -> 3600); undefined when none. */
export function longestSaveInterval(save: string | undefined): number | undefined {
  if (!save) return undefined;
  const numbers = save.trim().split(/\s+/).map(Number);
  const intervals = numbers.filter((_, i) => i % 2 === 0).filter((n) => Number.isFinite(n) && n > 0);
  return intervals.length > 0 ? Math.max(...intervals) : undefined;
}

function lastSaveCheck(f: Facts, maxAgeOption: number | undefined): PersistenceCheck {
  const save = f.setting("save");
  if (f.configOk && save !== undefined && save.trim() === "") {
    return check(
      "rdb_last_save_time",
      "warn",
      null,
      'RDB snapshots are off (save ""): only the AOF holds the data, and backups get no dump.rdb',
      `CONFIG SET save "3600 1 300 100 60 10000", ${PERSIST_IT}`,
    );
  }
  const now = serverNowSec(f.infoMap) ?? Date.now() / 1000;
  const age = Math.max(0, Math.round(now - f.num("rdb_last_save_time")));
  const changes = f.num("rdb_changes_since_last_save");
  const longest = longestSaveInterval(save);
  const maxAge = maxAgeOption ?? (longest !== undefined ? 2 * longest : 7200);
  const text = `the last successful RDB snapshot is ${age} s old, with ${changes} changes since`;
  if (!(changes > 0 && age > maxAge)) return check("rdb_last_save_time", "pass", age, text);
  return check(
    "rdb_last_save_time",
    "warn",
    age,
    `${text} (more than ${maxAge} s): snapshots are not being taken`,
    "check rdb_last_bgsave_status and the Redis log; BGSAVE to take one now",
  );
}

function replicationCheck(f: Facts, maxLagSec: number): PersistenceCheck {
  const role = f.info("role");
  if (role === "slave") return replicaCheck(f, maxLagSec);
  const replicas = [...f.infoMap.entries()]
    .filter(([key]) => /^slave\d+$/.test(key))
    .map(([, value]) => Object.fromEntries(value.split(",").map((kv) => kv.split("=") as [string, string])));
  if (replicas.length === 0) {
    return check(
      "replication",
      "pass",
      "master, no replicas",
      "no replica: losing this machine's disk loses Redis's data (PostgreSQL keeps the record)",
    );
  }
  const lags = replicas.map((r) => Number(r.lag));
  const behind = replicas.filter((r) => r.state !== "online" || !(Number(r.lag) <= maxLagSec));
  const value = `master, ${replicas.length} replicas, max lag ${Math.max(...lags)} s`;
  if (behind.length === 0) return check("replication", "pass", value, "every replica is online and current");
  return check(
    "replication",
    "warn",
    value,
    `${behind.length} replica(s) offline or more than ${maxLagSec} s behind: a failover to one loses the writes it lacks`,
    "check the replicas' master_link_status and network",
  );
}

function replicaCheck(f: Facts, maxLagSec: number): PersistenceCheck {
  const link = f.info("master_link_status") ?? "unknown";
  const silent = f.num("master_last_io_seconds_ago");
  const value = `replica, link ${link}, last I/O ${silent} s ago`;
  const why =
    link !== "up"
      ? "and its link to the master is down"
      : silent > maxLagSec
        ? `and its master has been silent for ${silent} s`
        : "";
  return check(
    "replication",
    "fail",
    value,
    `this Redis is a replica ${why}: it refuses the queue's writes (READONLY), so the queue would ` +
      "serve from PostgreSQL only",
    "point REDIS_URL at the master (or at Sentinel)",
  );
}

function lastStartCheck(start: LastStart): PersistenceCheck {
  if (!start.readable) return check("last_start", "pass", null, `not checked: ${start.reason}`);
  if (!start.found) {
    return check("last_start", "pass", null, `the last start is not in the end of ${start.file}`);
  }
  if (start.truncatedAof) {
    return check(
      "last_start",
      "warn",
      "truncated AOF loaded",
      `at its last start Redis loaded a truncated AOF and dropped its cut tail ("${start.truncatedAof}"): ` +
        "the writes in that tail are gone from Redis; the queue restores its index from PostgreSQL",
      "run `oculus reconcile`; find in the Redis log, before that start, why the AOF was cut (crash, full disk)",
    );
  }
  if (start.createdEmptyAof) {
    return check(
      "last_start",
      "pass",
      "started without an AOF",
      "Redis found no AOF at its last start and began empty (a new data directory; if it was not new, " +
        "its data was lost and the queue rebuilt its index from PostgreSQL)",
    );
  }
  return check("last_start", "pass", start.loadedFrom ?? null, `the last start went cleanly (${start.file})`);
}
