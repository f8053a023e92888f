/** The readable tables and the targets of the persistence part (bench/persistence.ts). */

import { type PersistencePart, summarizeLoss } from "./persistence.js";
import type { Persistence } from "./persistent-redis.js";
import { fmt, table } from "./text.js";

const LABELS: Record<Persistence, string> = {
  none: "no persistence (appendonly no)",
  everysec: "AOF, appendfsync everysec",
  always: "AOF, appendfsync always",
};

export function renderPersistence(out: string[], part: PersistencePart): void {
  const t = part.throughput;
  out.push(
    "",
    `Redis persistence: ${fmt(t.builds)} no-op builds (submitMany in chunks of ${fmt(t.chunk)}, claim loop at ` +
      `concurrency ${t.concurrency}), Redis mode, a new private redis-server per run (no RDB snapshots); ` +
      "ZADD/s: Redis alone, 50 commands in flight (medians of the runs)",
  );
  out.push(
    table(
      ["Redis", "submit/s", "x none", "processed/s", "x none", "ZADD/s", "x none", "processed/s per run"],
      t.modes.map((m) => [
        LABELS[m.persistence],
        fmt(m.submitPerSec),
        fmt(m.ratio.submit, 2),
        fmt(m.processedPerSec),
        fmt(m.ratio.processed, 2),
        fmt(m.zaddPerSec),
        fmt(m.ratio.zadd, 2),
        m.runs.map((r) => fmt(r.processedPerSec)).join(", "),
      ]),
    ),
  );
  out.push(
    "",
    `   kill -9 of Redis under disk load (${part.loss.diskLoad}), submits running. "fsync running": share of ` +
      "INFO samples (every 20 ms) with an AOF fsync in progress, during which everysec holds new writes in " +
      'memory; "ms into an fsync": killed once one fsync had run that long (the worst case, made to happen):',
  );
  out.push(
    table(
      [
        "try",
        "Redis",
        "kill",
        "load ms",
        "delayed fsyncs",
        "fsync running",
        "longest fsync ms",
        "builds acked by Redis",
        "lost by Redis",
        "oldest lost, ms before kill",
        "in PostgreSQL",
        "restored by reconcile",
        "ZADDs acked",
        "ZADDs lost",
      ],
      part.loss.tries.map((x, i) => [
        String(i + 1),
        x.persistence,
        x.kill === "random"
          ? "at a set time"
          : x.fsyncAgeAtKillMs === null
            ? "no 200 ms fsync: at 15 s"
            : `${fmt(x.fsyncAgeAtKillMs)} ms into an fsync`,
        fmt(x.loadMs),
        fmt(x.delayedFsync),
        `${fmt(x.fsyncShare * 100)} %`,
        fmt(x.longestFsyncMs),
        fmt(x.ackedInRedis),
        fmt(x.lostInRedis),
        x.oldestLostAckMs === null ? "-" : fmt(x.oldestLostAckMs),
        `${fmt(x.inRecord)} / ${fmt(x.submitted)}`,
        fmt(x.restoredByReconcile),
        fmt(x.rawAcked),
        fmt(x.rawLost),
      ]),
    ),
  );
}

/** What must hold whatever Redis loses: PostgreSQL has every build, and the reconciler restores the index. */
export function persistenceTargets(
  part: PersistencePart,
): { target: string; measured: string; met: boolean }[] {
  const out = [];
  const kinds = [
    ["everysec", "random", "everysec, killed at a set time"],
    ["everysec", "during-fsync", "everysec, killed during an fsync"],
    ["always", "random", "always, killed at a set time"],
  ] as const;
  for (const [persistence, kill, label] of kinds) {
    const s = summarizeLoss(part.loss.tries, persistence, kill);
    if (s.tries === 0) continue;
    out.push({
      target: `kill -9 of Redis (${label}) under disk load: no build lost from PostgreSQL, index restored by the reconciler`,
      measured:
        `${s.triesWithLoss} of ${s.tries} tries lost acknowledged index entries in Redis (${s.lost.join(", ")}); ` +
        `PostgreSQL complete: ${s.recordComplete ? "yes" : "NO"}; index restored: ${s.indexRestored ? "yes" : "NO"}`,
      met: s.recordComplete && s.indexRestored,
    });
  }
  return out;
}
