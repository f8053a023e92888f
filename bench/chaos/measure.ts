/**
 * What a phase did, from the record (PostgreSQL, read after the phase) and from the build commands'
 * own run files:
 *
 * - acknowledged: distinct build ids the API answered 201/200 for;
 * - completed / failed: their status once the queue has drained (bounded settle);
 * - lost: acknowledged builds missing from PostgreSQL or not finished (completed, failed, stopped)
 *   when the settle period ends;
 * - started more than once: see `doubleRuns`;
 * - completed/s: completions (finished_at) during the fault window;
 * - claim wait p99: from the build's commit (created_at) to its first `claimed` event (both written by
 *   PostgreSQL, so no clock skew): queue wait plus the claim itself, what a user waits for;
 * - time to recover: from the end of the fault to the first 2-second span completing at least half of
 *   the clean phase's rate.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { sleep } from "../stats.js";
import type { Exit } from "./fleet.js";
import type { ChaosPostgres } from "./servers.js";

const FINISHED = ["completed", "failed", "stopped"];

/** Waits until every acknowledged build has finished, or `boundMs` has passed; resolves to the wait in ms. */
export async function settle(
  postgres: ChaosPostgres,
  database: string,
  ids: string[],
  boundMs: number,
): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < boundMs) {
    const rows = await postgres
      .sql<{ n: number }>(
        database,
        "SELECT count(*)::int AS n FROM oculus.builds WHERE id = ANY($1::uuid[]) AND status = ANY($2::text[])",
        [ids, FINISHED],
      )
      .catch(() => undefined);
    if (rows && (rows[0]?.n ?? 0) >= ids.length) break;
    await sleep(500);
  }
  return Date.now() - started;
}

export interface RecordFigures {
  completed: number;
  failed: number;
  stopped: number;
  lost: number;
  /** A few lost ids with their state, for the report. */
  lostSample: { id: string; status: string }[];
  /** Wall-clock ms of each completion. */
  completions: number[];
  claimWaitP99Ms: number;
  claimWaitP50Ms: number;
  retried: number;
}

interface BuildRow {
  id: string;
  status: string;
  retry_count: number;
  finished_ms: number | null;
  claim_wait_ms: number | null;
}

export async function readRecord(
  postgres: ChaosPostgres,
  database: string,
  ids: string[],
): Promise<RecordFigures> {
  const rows = await postgres.sql<BuildRow>(
    database,
    `SELECT b.id, b.status, b.retry_count,
            (extract(epoch FROM b.finished_at) * 1000)::float8 AS finished_ms,
            (extract(epoch FROM (SELECT min(e.at) FROM oculus.build_events e
                                 WHERE e.build_id = b.id AND e.type = 'claimed') - b.created_at) * 1000)::float8
              AS claim_wait_ms
     FROM oculus.builds b WHERE b.id = ANY($1::uuid[])`,
    [ids],
  );
  const byId = new Map(rows.map((r) => [r.id, r]));
  const lostSample: { id: string; status: string }[] = [];
  let lost = 0;
  for (const id of ids) {
    const row = byId.get(id);
    if (row && FINISHED.includes(row.status)) continue;
    lost += 1;
    if (lostSample.length < 5) lostSample.push({ id, status: row?.status ?? "missing" });
  }
  const waits = rows
    .map((r) => r.claim_wait_ms)
    .filter((w): w is number => w !== null)
    .sort((a, b) => a - b);
  const at = (p: number) =>
    waits.length === 0
      ? Number.NaN
      : (waits[Math.min(waits.length - 1, Math.ceil((p / 100) * waits.length) - 1)] ?? Number.NaN);
  return {
    completed: rows.filter((r) => r.status === "completed").length,
    failed: rows.filter((r) => r.status === "failed").length,
    stopped: rows.filter((r) => r.status === "stopped").length,
    lost,
    lostSample,
    completions: rows
      .filter((r) => r.status === "completed" && r.finished_ms !== null)
      .map((r) => r.finished_ms as number)
      .sort((a, b) => a - b),
    claimWaitP99Ms: at(99),
    claimWaitP50Ms: at(50),
    retried: rows.filter((r) => r.retry_count > 0).length,
  };
}

/** Completions a second in [from, to). */
export function rate(completions: number[], from: number, to: number): number {
  if (to <= from) return Number.NaN;
  return completions.filter((t) => t >= from && t < to).length / ((to - from) / 1000);
}

/**
 * Seconds from `faultEnd` to the start of the first 2-second span (stepping by 100 ms) in which the
 * completions reach half the clean rate; null when that never happens before `until`.
 */
export function recoverySeconds(
  completions: number[],
  faultEnd: number,
  until: number,
  cleanRate: number,
): number | null {
  if (!Number.isFinite(cleanRate) || cleanRate <= 0) return null;
  const need = 0.5 * cleanRate * 2;
  for (let t = faultEnd; t + 2000 <= until; t += 100) {
    if (rate(completions, t, t + 2000) * 2 >= need) return (t - faultEnd) / 1000;
  }
  return null;
}

interface Run {
  id: string;
  lease: string;
  worker: string;
  start: number;
  end?: number;
  abort?: number;
}

export interface RunFigures {
  runs: number;
  /** Builds started more than once against the rule (see doubleRuns). */
  doubleRun: number;
  /** A few of them, with why. */
  doubleSample: string[];
  /** Runs after an earlier run had ended by a worker's exit or an abort: the retry the design allows. */
  legitimateReruns: number;
  /** Acknowledged builds that never started (should be 0 when completed == acknowledged). */
  neverStarted: number;
}

/** Every run of every build, from the run files of a phase's directory. */
export function readRuns(dir: string): Map<string, Run[]> {
  const runs = new Map<string, Run>();
  for (const file of readdirSync(dir).filter((f) => f.startsWith("runs-"))) {
    for (const line of readFileSync(path.join(dir, file), "utf8").split("\n")) {
      const [kind, id, lease, worker, ms] = line.trim().split(" ");
      if (!kind || !id || !lease || !worker || !ms) continue;
      const key = `${id} ${lease} ${worker}`;
      const run = runs.get(key) ?? { id, lease, worker, start: Number.NaN };
      if (kind === "start") run.start = Number(ms);
      else if (kind === "end") run.end = Number(ms);
      else if (kind === "abort") run.abort = Number(ms);
      runs.set(key, run);
    }
  }
  const byBuild = new Map<string, Run[]>();
  for (const run of runs.values()) {
    const list = byBuild.get(run.id) ?? [];
    list.push(run);
    byBuild.set(run.id, list);
  }
  for (const list of byBuild.values()) list.sort((a, b) => a.start - b.start);
  return byBuild;
}

/**
 * The double-run rule. For each build, its runs in start order; a run B after an earlier run A is a
 * violation when:
 *
 * 1. A was still going when B started (overlap: two workers ran the build at once). A is over at its
 *    `end` line (the command finished its work), its `abort` line (SIGTERM: a stop, a shutdown, a
 *    fence), or when its worker process exited (the watchdog kills the command of a worker that dies;
 *    the harness notes every exit). A run with none of these is taken as still going.
 * 2. A had finished its work (an `end` line) and its worker did not exit between A's end and B's
 *    start: the result of a successful run was lost or refused and the build ran again.
 *
 * A rerun after A's worker exited (kill -9 on purpose, or a death, counted on its own) or after an
 * abort is the retry the design promises, and is counted as a legitimate rerun.
 */
export function doubleRuns(byBuild: Map<string, Run[]>, exits: Exit[], acked: string[]): RunFigures {
  const exitAt = new Map(exits.map((e) => [e.name, e.at]));
  let runs = 0;
  let doubleRun = 0;
  let legitimateReruns = 0;
  const doubleSample: string[] = [];
  for (const list of byBuild.values()) {
    runs += list.length;
    let violation: string | undefined;
    for (let i = 1; i < list.length; i++) {
      const b = list[i] as Run;
      for (const a of list.slice(0, i)) {
        const workerExit = exitAt.get(a.worker);
        const over = Math.min(a.end ?? Infinity, a.abort ?? Infinity, workerExit ?? Infinity);
        if (over > b.start) {
          violation ??= `${a.id}: lease ${a.lease} on ${a.worker} still running (${Number.isFinite(over) ? `until +${over - b.start} ms` : "no end"}) when lease ${b.lease} started on ${b.worker}`;
        } else if (
          a.end !== undefined &&
          !(workerExit !== undefined && workerExit >= a.end && workerExit <= b.start)
        ) {
          violation ??= `${a.id}: lease ${a.lease} finished on ${a.worker}, ran again ${b.start - a.end} ms later (lease ${b.lease} on ${b.worker})`;
        }
      }
      if (!violation) legitimateReruns += 1;
    }
    if (violation) {
      doubleRun += 1;
      if (doubleSample.length < 5) doubleSample.push(violation);
    }
  }
  const neverStarted = acked.filter((id) => !byBuild.has(id)).length;
  return { runs, doubleRun, doubleSample, legitimateReruns, neverStarted };
}
