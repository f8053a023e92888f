/** The benchmark's result object, the targets it is judged against, and the readable tables. */

import { type DispatchHops, HOPS } from "./dispatch-hops.js";
import { FANOUT_SYSTEMS, type FanoutPart, type FanoutSystem } from "./fanout.js";
import type { HttpPart } from "./http.js";
import { httpTargets, renderHttp } from "./http-report.js";
import type { IdlePart } from "./idle.js";
import type { PersistencePart } from "./persistence.js";
import { persistenceTargets, renderPersistence } from "./persistence-report.js";
import { PRESSURE_PHASES, type PressurePart } from "./pressure.js";
import { PROCESS_SYSTEMS, type ProcessesPart } from "./processes.js";
import type { RecoveryPart, RecoveryResult } from "./recovery.js";
import type { ScaleStep } from "./scale.js";
import type { Distribution } from "./stats.js";
import { STOP_MODES, type StopPart } from "./stop.js";
import { fmt, table } from "./text.js";
import type { ThroughputSample } from "./throughput.js";

/**
 * The prefetch of the "redisPrefetch" row (ClaimLoopOptions.prefetch): builds claimed ahead of the
 * 50 slots, so claims of up to 150 instead of 50.
 */
export const PREFETCH = 100;

/** Figures measured elsewhere, NOT in this run: printed next to ours for orientation only. */
export const REFERENCE = {
  note: "measured elsewhere, not in this run",
  processedPerSec: {
    "graphile-worker 0.17": 1700,
    "BullMQ 6.7 PostgreSQL backend": 1170,
    "pg-boss 12": 5340,
  },
  latencyMs: { "graphile-worker": { p50: 3.1, p99: 7.5 } },
  /** BullMQ cancelJob relayed to the worker over Redis pub/sub: no durable record of the stop. */
  stopMs: { "BullMQ cancelJob over pub/sub": { p50: 1.5, p95: "2-3" } },
} as const;

export interface Machine {
  os: string;
  cpuModel: string;
  cpuCount: number;
  memoryGiB: number;
  node: string;
  redisServer: string;
  postgres: string;
}

export interface ThroughputSeries {
  runs: ThroughputSample[];
  submitPerSec: number;
  processedPerSec: number;
}

/** The systems in the latency table. */
export type System = "bullmq" | "redis" | "postgres";
/**
 * The throughput table adds our two modes measured again after an ANALYZE of the freshly filled table
 * (the planner's statistics then count the queued builds, as they would on a long-lived table).
 */
export type ThroughputSystem =
  | System
  | "redisAnalyzed"
  | "redisPrefetch"
  | "redisPrefetchAuto"
  | "postgresAnalyzed"
  | "bullmqEverysec"
  | "bullmqAlways"
  | "pgboss"
  | "graphile";
export const THROUGHPUT_SYSTEMS: readonly ThroughputSystem[] = [
  "bullmq",
  "bullmqEverysec",
  "bullmqAlways",
  "redis",
  "postgres",
  "redisAnalyzed",
  "postgresAnalyzed",
  "redisPrefetch",
  "redisPrefetchAuto",
  "pgboss",
  "graphile",
];

/** Each system's submit and processed rates over BullMQ's (no persistence) in the same run. */
export type RatiosToBullmq = Record<
  Exclude<ThroughputSystem, "bullmq">,
  { submit: number; processed: number }
>;

export interface Results {
  date: string;
  command: string;
  options: Record<string, unknown>;
  machine: Machine;
  durationSec: number;
  /** null when the part was not run (--only). */
  throughput: {
    builds: number;
    chunk: number;
    concurrency: number;
    /** Builds per system in the untimed warm-up round before the timed runs (absent before session 10). */
    warmupBuilds?: number;
    series: Record<ThroughputSystem, ThroughputSeries>;
    ratioToBullmq: RatiosToBullmq;
    reference: typeof REFERENCE.processedPerSec;
  } | null;
  /** null when the part was not run (--only). */
  latency: {
    count: number;
    warmup: number;
    note: string;
    ms: Record<System, Distribution>;
    /** Where a Redis-mode dispatch's time goes (bench/dispatch-hops.ts); absent in older results. */
    hops?: DispatchHops;
    reference: typeof REFERENCE.latencyMs;
  } | null;
  scale: { chunk: number; steps: ScaleStep[] } | null;
  /** Worker recovery after kill -9 (bench/recovery.ts); null with --skip-recovery. */
  recovery: RecoveryPart | null;
  /** Stop latency to a worker in another process (bench/stop.ts); null with --skip-stop. */
  stop: StopPart | null;
  /** Progress fan-out to 1,000 subscribers (bench/fanout.ts); null when not run. */
  fanout: FanoutPart | null;
  /** Redis persistence: throughput by fsync setting, loss after kill -9 (bench/persistence.ts); null when not run. */
  persistence: PersistencePart | null;
  /** The HTTP API in a server process: submit, read, SSE fan-out (bench/http.ts); null when not run. */
  http: HttpPart | null;
  /** The idle cost of a fleet, ours and BullMQ's (bench/idle.ts); null when not run. */
  idle: IdlePart | null;
  /** Processed/s with 1, 2 and 4 worker processes (bench/processes.ts); null when not run. */
  processes: ProcessesPart | null;
  /** Throughput with an xid held and with REPEATABLE READ readers (bench/pressure.ts); null when not run. */
  pressure?: PressurePart | null;
  /** 1-minute load average when each part started and when the run ended (other work on the machine). */
  loadAverage: Record<string, number>;
  /** False when the run started above the quiet load average (--allow-busy): not comparable. */
  quiet: boolean;
  targets: Target[];
  referenceNote: string;
}

export interface Target {
  target: string;
  measured: string;
  met: boolean;
}

export function evaluateTargets(r: Omit<Results, "targets">): Target[] {
  const targets: Target[] = [];
  const tp = r.throughput?.series;
  if (tp) {
    targets.push(
      {
        target: "Redis mode processed/s >= BullMQ's (every build durable in PostgreSQL)",
        measured: `${fmt(tp.redis.processedPerSec)}/s (${fmt(tp.redisAnalyzed.processedPerSec)}/s after ANALYZE; claim loop with prefetch ${PREFETCH}: ${fmt(tp.redisPrefetch.processedPerSec)}/s, prefetch auto: ${fmt(tp.redisPrefetchAuto.processedPerSec)}/s) vs BullMQ ${fmt(tp.bullmq.processedPerSec)}/s`,
        met: tp.redis.processedPerSec >= tp.bullmq.processedPerSec,
      },
      {
        target:
          "Redis mode processed/s >= 2x BullMQ's on a Redis with appendfsync always (its durable set-up)",
        measured: `${fmt(tp.redis.processedPerSec)}/s vs 2 x ${fmt(tp.bullmqAlways.processedPerSec)}/s`,
        met: tp.redis.processedPerSec >= 2 * tp.bullmqAlways.processedPerSec,
      },
      {
        target: "PostgreSQL-only mode processed/s >= 2x pg-boss's and 2x graphile-worker's (same run)",
        measured: `${fmt(tp.postgres.processedPerSec)}/s vs 2 x ${fmt(tp.pgboss.processedPerSec)}/s (pg-boss), 2 x ${fmt(tp.graphile.processedPerSec)}/s (graphile-worker)`,
        met:
          tp.postgres.processedPerSec >= 2 * tp.pgboss.processedPerSec &&
          tp.postgres.processedPerSec >= 2 * tp.graphile.processedPerSec,
      },
    );
  }
  const lat = r.latency?.ms;
  if (lat) {
    targets.push(
      {
        target: "Redis mode dispatch p99 <= BullMQ's",
        measured: `${fmt(lat.redis.p99, 2)} ms vs BullMQ ${fmt(lat.bullmq.p99, 2)} ms`,
        met: lat.redis.p99 <= lat.bullmq.p99,
      },
      {
        target: "PostgreSQL mode dispatch p99 <= 7.5 ms (graphile-worker, reference)",
        measured: `${fmt(lat.postgres.p99, 2)} ms`,
        met: lat.postgres.p99 <= 7.5,
      },
    );
  }
  const steps = r.scale?.steps ?? [];
  const first = steps[0];
  const last = steps[steps.length - 1];
  if (first && last && steps.length > 1) {
    const range = `${fmt(first.size)} -> ${fmt(last.size)}`;
    for (const [label, key] of [
      ["position()", "positionMs"],
      ["claim(1)", "claimMs"],
    ] as const) {
      const a = first[key].p50;
      const b = last[key].p50;
      targets.push({
        target: `${label} median flat from ${range} (at most 2x)`,
        measured: `${fmt(a, 3)} ms -> ${fmt(b, 3)} ms (x${fmt(b / a, 2)})`,
        met: b <= 2 * a,
      });
    }
  }
  if (last) {
    targets.push({
      target: `index rebuild at ${fmt(last.size)} in seconds (under 60 s, not minutes)`,
      measured: `${fmt(last.rebuild.durationMs / 1000, 2)} s (${fmt((last.rebuild.queued / last.rebuild.durationMs) * 1000)} builds/s)`,
      met: last.rebuild.durationMs < 60_000,
    });
  }
  for (const x of r.recovery?.results ?? []) {
    if (x.limitMs === null) continue;
    targets.push({
      target: `dead worker to build running elsewhere within the worker timeout + 1 s (${settingsText(x)}: max <= ${fmt(x.limitMs / 1000, 1)} s)`,
      measured: `max ${fmt(x.ms.max / 1000, 2)} s, median ${fmt(x.ms.median / 1000, 2)} s over ${x.runs.length} kills`,
      met: x.ms.max <= x.limitMs,
    });
  }
  const stop = r.stop?.results;
  if (stop) {
    for (const [mode, limit, label] of [
      ["redis", 10, "Redis mode"],
      ["postgres", 25, "PostgreSQL-only mode"],
    ] as const) {
      targets.push({
        target: `${label} stop p99 < ${limit} ms (stop() -> handler signal in another process, stop durable first)`,
        measured: `${fmt(stop[mode].ms.p99, 2)} ms (p50 ${fmt(stop[mode].ms.p50, 2)}, max ${fmt(stop[mode].ms.max, 2)})`,
        met: stop[mode].ms.p99 < limit && stop[mode].anomalies.length === 0,
      });
    }
  }
  for (const system of ["redis", "postgres"] as const) {
    const x = r.fanout?.results[system];
    if (!x) continue;
    targets.push({
      target: `${FANOUT_LABELS[system]}: progress fan-out delivers every update to every subscriber once (p99 reported, no threshold)`,
      measured: `${fmt(x.delivered)} of ${fmt(x.expected)} deliveries, ${fmt(x.missing)} missing, ${fmt(x.duplicates)} duplicates; p99 ${fmt(x.ms.p99, 2)} ms`,
      met: x.missing === 0 && x.duplicates === 0 && x.foreign === 0,
    });
  }
  if (r.persistence) targets.push(...persistenceTargets(r.persistence));
  if (r.http) targets.push(...httpTargets(r.http));
  if (r.pressure) targets.push(...pressureTargets(r.pressure));
  const ours = r.idle?.fleets.find((f) => f.system !== "BullMQ");
  if (ours) {
    const statements = ours.postgresStatementsPerSecond ?? 0;
    const maxCpu = Math.max(...ours.cpu.map((c) => c.percent));
    targets.push(
      {
        target: `idle fleet (1 oculus up + ${r.idle?.workers} oculus worker): PostgreSQL statements/s < 20 in total`,
        measured: `${fmt(statements, 1)}/s`,
        met: statements < 20,
      },
      {
        target: "idle fleet: CPU < 1 % of a core per process",
        measured: `max ${fmt(maxCpu, 2)} % (${ours.cpu.map((c) => `${c.role} ${fmt(c.percent, 2)}`).join(", ")})`,
        met: maxCpu < 1,
      },
    );
  }
  return targets;
}

function settingsText(x: RecoveryResult): string {
  const s = x.settings;
  return x.system === "ours"
    ? `heartbeat ${fmt((s.heartbeatMs ?? 0) / 1000, 1)} s, dead after ${fmt((s.deadAfterMs ?? 0) / 1000, 0)} s`
    : `lockDuration ${fmt((s.lockDuration ?? 0) / 1000, 0)} s, stalledInterval ${fmt((s.stalledInterval ?? 0) / 1000, 0)} s`;
}

const LABELS: Record<ThroughputSystem, string> = {
  bullmq: "BullMQ 6.7 (Redis, no persistence)",
  bullmqEverysec: "BullMQ 6.7 (Redis AOF, appendfsync everysec)",
  bullmqAlways: "BullMQ 6.7 (Redis AOF, appendfsync always)",
  pgboss: "pg-boss 10.4 (PostgreSQL; 10 workers x batches of 100)",
  graphile: "graphile-worker 0.17 (PostgreSQL)",
  redis: "ours, Redis mode",
  postgres: "ours, PostgreSQL-only",
  redisAnalyzed: "ours, Redis mode, after ANALYZE",
  redisPrefetch: `ours, Redis mode, prefetch ${PREFETCH} (as oculus worker --prefetch ${PREFETCH})`,
  redisPrefetchAuto: "ours, Redis mode, prefetch auto (as oculus worker --prefetch auto)",
  postgresAnalyzed: "ours, PostgreSQL-only, after ANALYZE",
};

export function renderText(r: Results): string {
  const m = r.machine;
  const out: string[] = [];
  out.push(`oculus-build-queue benchmark, ${r.date} (${fmt(r.durationSec)} s)`);
  out.push(`machine: ${m.os}; ${m.cpuCount} x ${m.cpuModel}; ${fmt(m.memoryGiB, 1)} GiB; node ${m.node}`);
  out.push(`         redis-server ${m.redisServer} (private, no persistence); PostgreSQL ${m.postgres}`);
  const loads = Object.entries(r.loadAverage).map(([k, v]) => `${k} ${v.toFixed(2)}`);
  out.push(`         1-min load average: ${loads.join(", ")}`);
  if (!r.quiet)
    out.push("         NOT QUIET: started above the quiet load average (--allow-busy); not comparable");
  const t = r.throughput;
  if (t) renderThroughput(out, t);
  if (r.latency) renderLatency(out, r.latency);
  if (r.scale) renderScale(out, r.scale);
  if (r.recovery) renderRecovery(out, r.recovery);
  if (r.stop) renderStop(out, r.stop);
  if (r.fanout) renderFanout(out, r.fanout);
  if (r.persistence) renderPersistence(out, r.persistence);
  if (r.http) renderHttp(out, r.http);
  if (r.idle) renderIdle(out, r.idle);
  if (r.processes) renderProcesses(out, r.processes);
  if (r.pressure) renderPressure(out, r.pressure);
  out.push("", "Targets");
  out.push(
    table(
      ["target", "measured", "met"],
      r.targets.map((x) => [x.target, x.measured, x.met ? "yes" : "NO"]),
    ),
  );
  return out.join("\n");
}

function renderThroughput(out: string[], t: NonNullable<Results["throughput"]>): void {
  out.push(
    "",
    `1. Throughput: ${fmt(t.builds)} no-op builds, submitted in chunks of ${fmt(t.chunk)}, processed at concurrency ${t.concurrency} (median of ${t.series.bullmq.runs.length} runs${t.warmupBuilds ? `, after an untimed warm-up round of ${fmt(t.warmupBuilds)} builds per system` : ""})`,
  );
  const ratio = (s: ThroughputSystem, k: "submit" | "processed") =>
    s === "bullmq" ? "1.00" : fmt(t.ratioToBullmq[s][k], 2);
  out.push(
    table(
      ["system", "submit/s", "x BullMQ", "processed/s", "x BullMQ", "processed/s per run"],
      THROUGHPUT_SYSTEMS.map((s) => [
        LABELS[s],
        fmt(t.series[s].submitPerSec),
        ratio(s, "submit"),
        fmt(t.series[s].processedPerSec),
        ratio(s, "processed"),
        t.series[s].runs.map((x) => fmt(x.processedPerSec)).join(", "),
      ]),
    ),
  );
  out.push(
    `   reference (${REFERENCE.note}), processed/s on PostgreSQL: ${Object.entries(t.reference)
      .map(([k, v]) => `${k} ${fmt(v)}`)
      .join("; ")}`,
  );
}

function renderLatency(out: string[], l: NonNullable<Results["latency"]>): void {
  out.push(
    "",
    `2. Dispatch latency, submit -> handler start, idle worker, ${fmt(l.count)} sequential builds (${l.note})`,
  );
  out.push(
    table(
      ["system", "p50 ms", "p95 ms", "p99 ms", "max ms", "mean ms"],
      (["bullmq", "redis", "postgres"] as const).map((s) => [
        LABELS[s],
        ...[l.ms[s].p50, l.ms[s].p95, l.ms[s].p99, l.ms[s].max, l.ms[s].mean].map((x) => fmt(x, 2)),
      ]),
    ),
  );
  out.push(`   reference (${REFERENCE.note}): graphile-worker p50 3.1 ms, p99 7.5 ms`);
  if (l.hops) renderHops(out, l.hops);
}

const HOP_LABELS: Record<(typeof HOPS)[number], string> = {
  submitCommit: "submit commit (PostgreSQL INSERT + commit)",
  indexWrite: "index write (Redis script, publishes the wake-up)",
  wakeUp: "wake-up (index write answered -> idle worker's wait returns)",
  pop: "pop (Redis script)",
  claimCommit: "claim commit (PostgreSQL UPDATE + event + commit)",
  handlerStart: "handler start (claim answered -> handler's first line)",
};

function renderHops(out: string[], h: DispatchHops): void {
  out.push(
    `   where a Redis-mode dispatch's time goes (${fmt(h.count)} dispatches, microseconds; the queue's own calls timed in place):`,
  );
  out.push(
    table(
      ["hop", "p50 us", "p99 us", "mean us"],
      [
        ...HOPS.map((hop) => [
          HOP_LABELS[hop],
          fmt(h.hopsUs[hop].p50),
          fmt(h.hopsUs[hop].p99),
          fmt(h.hopsUs[hop].mean),
        ]),
        ["whole dispatch (submit() -> handler)", fmt(h.totalUs.p50), fmt(h.totalUs.p99), fmt(h.totalUs.mean)],
        [
          "floor: two durable commits in a row",
          fmt(h.twoCommitsUs.p50),
          fmt(h.twoCommitsUs.p99),
          fmt(h.twoCommitsUs.mean),
        ],
      ],
    ),
  );
  out.push(
    `   whole dispatch p50 / floor p50: ${fmt(h.totalUs.p50 / h.twoCommitsUs.p50, 2)}x; in no hop (JavaScript between the calls), p50 ${fmt(h.unaccountedUs)} us`,
  );
}

function renderScale(out: string[], scale: NonNullable<Results["scale"]>): void {
  out.push(
    "",
    `3. Scale (Redis mode; "fallback" = the same queue served from PostgreSQL only), medians in ms`,
  );
  out.push(
    table(
      [
        "queued",
        "insert/s",
        "position p50/p95",
        "claim(1) p50/p95",
        "fallback position",
        "fallback claim",
        "index rebuild ms",
      ],
      scale.steps.map((s) => [
        fmt(s.size),
        fmt(s.insertPerSec),
        `${fmt(s.positionMs.p50, 3)} / ${fmt(s.positionMs.p95, 3)}`,
        `${fmt(s.claimMs.p50, 3)} / ${fmt(s.claimMs.p95, 3)}`,
        s.fallbackPositionMs ? fmt(s.fallbackPositionMs.p50, 3) : "-",
        s.fallbackClaimMs ? fmt(s.fallbackClaimMs.p50, 3) : "-",
        fmt(s.rebuild.durationMs),
      ]),
    ),
  );
}

function renderRecovery(out: string[], rec: RecoveryPart): void {
  out.push(
    "",
    `4. Worker recovery: kill -9 of the worker process running a build -> its handler starting on another worker process (2 idle workers per try; before each submit a random idle pause of up to one detection-timer period; the kill 200 ms + a random part of one lease-renewal period after the start; our reaper every ${fmt(rec.reaperIntervalMs / 1000, 0)} s)`,
  );
  out.push(
    table(
      ["system", "settings", "kills", "median s", "max s", "min s", "limit s", "second start", "anomalies"],
      rec.results.map((x) => [
        `${x.system === "ours" ? "ours, Redis mode" : "BullMQ 6.7"} (${x.label})`,
        settingsText(x),
        String(x.runs.length),
        fmt(x.ms.median / 1000, 2),
        fmt(x.ms.max / 1000, 2),
        fmt(x.ms.min / 1000, 2),
        x.limitMs === null ? "-" : fmt(x.limitMs / 1000, 1),
        `${x.system === "ours" ? "retryCount" : "stalledCounter"} ${[...new Set(x.runs.map((y) => y.attempt))].join("/")}`,
        x.anomalies.length === 0 ? "none" : x.anomalies.join("; "),
      ]),
    ),
  );
}

function renderStop(out: string[], stop: StopPart): void {
  out.push(
    "",
    `5. Stop latency: queue.stop() call -> the handler's signal firing in a worker in another process, ${fmt(stop.tries)} tries per mode after ${stop.warmup} warm-up (stop() with ${stop.pauseMs} ms after the handler started; 'stopping' committed in PostgreSQL before stop() returns)`,
  );
  out.push(
    table(
      ["system", "p50 ms", "p95 ms", "p99 ms", "max ms", "mean ms", "stop() call p50 ms", "anomalies"],
      STOP_MODES.map((mode) => {
        const x = stop.results[mode];
        return [
          LABELS[mode],
          ...[x.ms.p50, x.ms.p95, x.ms.p99, x.ms.max, x.ms.mean, x.stopCallMs.p50].map((v) => fmt(v, 2)),
          x.anomalies.length === 0 ? "none" : String(x.anomalies.length),
        ];
      }),
    ),
  );
  out.push(
    `   reference (${REFERENCE.note}): BullMQ cancelJob relayed over pub/sub p50 1.5 ms, p95 2-3 ms (no durable record of the stop)`,
  );
}

const FANOUT_LABELS: Record<FanoutSystem, string> = {
  redis: "ours, Redis mode",
  postgres: "ours, PostgreSQL-only",
  bullmq: "BullMQ 6.7 QueueEvents",
};

function renderFanout(out: string[], f: FanoutPart): void {
  const subs = f.subscribers.allBuilds + f.subscribers.perBuild;
  out.push(
    "",
    `6. Progress fan-out: ${fmt(subs)} subscribers (${fmt(f.subscribers.allBuilds)} all-builds, ${fmt(f.subscribers.perBuild)} per-build) in this process, ${f.rate} updates/s from a producer process over ${f.builds} running builds (each build once a second; progressIntervalMs ${f.progressIntervalMs}), ${f.seconds} s measured after ${f.warmupSeconds} s warm-up; latency = send in the producer -> receive in each subscriber's loop`,
  );
  const systems = FANOUT_SYSTEMS.filter((s) => f.results[s]);
  const ms = (d: { p50: number; p99: number }) => `${fmt(d.p50, 2)} / ${fmt(d.p99, 2)}`;
  out.push(
    table(
      [
        "system",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "mean ms",
        "first delivery p50/p99",
        "spread p50/p99",
        "producer call p50/p99",
      ],
      systems.map((s) => {
        const x = f.results[s];
        if (!x) return [];
        return [
          FANOUT_LABELS[s],
          ...[x.ms.p50, x.ms.p95, x.ms.p99, x.ms.max, x.ms.mean].map((v) => fmt(v, 2)),
          ms(x.firstMs),
          ms(x.spreadMs),
          ms(x.producer.callMs),
        ];
      }),
    ),
  );
  out.push(
    table(
      [
        "system",
        "updates",
        "rate/s",
        "delivered",
        "expected",
        "missing",
        "duplicates",
        "foreign",
        "subscriber CPU",
        "producer CPU",
        "load avg 1/5/15 start -> end",
      ],
      systems.map((s) => {
        const x = f.results[s];
        if (!x) return [];
        const load = (l: number[]) => l.map((v) => v.toFixed(2)).join("/");
        return [
          FANOUT_LABELS[s],
          fmt(x.updates),
          fmt(x.achievedRatePerSec, 1),
          fmt(x.delivered),
          fmt(x.expected),
          `${fmt(x.missing)}${x.subscribersMissing ? ` (${x.subscribersMissing} subs)` : ""}`,
          `${fmt(x.duplicates)}${x.subscribersWithDuplicates ? ` (${x.subscribersWithDuplicates} subs)` : ""}`,
          fmt(x.foreign),
          `${fmt(x.subscriberCpuMs / 1000, 2)} s (${fmt((x.subscriberCpuMs / x.subscriberWallMs) * 100)} %)`,
          `${fmt(x.producer.cpuMs / 1000, 2)} s (${fmt((x.producer.cpuMs / x.producer.wallMs) * 100)} %)`,
          `${load(x.loadAverage.start)} -> ${load(x.loadAverage.end)}`,
        ];
      }),
    ),
  );
  out.push(
    "   first delivery: per update, send -> the first subscriber's receive (write + notice + one hub read); spread: first -> last subscriber (the in-process fan-out); producer call: send -> reportProgress resolved (ours: the progress commit) or updateProgress resolved (BullMQ); CPU: over the measured window, % of one core",
  );
  for (const s of systems) {
    const x = f.results[s];
    if (x && (x.subscriptionErrors.length > 0 || x.producer.errors > 0)) {
      out.push(
        `   ${FANOUT_LABELS[s]}: ${x.subscriptionErrors.length} subscription errors ${x.subscriptionErrors.slice(0, 3).join("; ")}; producer errors ${x.producer.errors} ${x.producer.firstError ?? ""}`,
      );
    }
  }
}

function renderIdle(out: string[], idle: IdlePart): void {
  out.push(
    "",
    `Idle cost: an idle fleet of 1 API process and ${idle.workers} worker processes, over ${idle.windowSeconds} s after ${idle.settleSeconds} s settling (ours: oculus up + oculus worker --command true on a private PostgreSQL with pg_stat_statements; BullMQ: a Queue process and Worker processes, concurrency 1)`,
  );
  out.push(
    table(
      [
        "system",
        "PostgreSQL statements/s",
        "Redis commands/s",
        "API CPU %",
        "worker CPU % mean",
        "worker CPU % max",
      ],
      idle.fleets.map((f) => {
        const workers = f.cpu.filter((c) => c.role === "worker").map((c) => c.percent);
        const api = f.cpu.find((c) => c.role === "api")?.percent ?? 0;
        const mean = workers.reduce((a, b) => a + b, 0) / Math.max(1, workers.length);
        return [
          f.system,
          f.postgresStatementsPerSecond === null ? "-" : fmt(f.postgresStatementsPerSecond, 1),
          fmt(f.redisCommandsPerSecond, 1),
          fmt(api, 2),
          fmt(mean, 2),
          fmt(Math.max(0, ...workers), 2),
        ];
      }),
    ),
  );
  const ours = idle.fleets.find((f) => f.topStatements.length > 0);
  if (ours) {
    out.push("   ours, PostgreSQL statements by kind (per second):");
    for (const s of ours.topStatements) out.push(`   ${fmt(s.perSecond, 2).padStart(7)}  ${s.statement}`);
  }
  for (const f of idle.fleets) {
    out.push(
      `   ${f.system}, Redis commands (per second): ${f.topRedisCommands.map((c) => `${c.command} ${fmt(c.perSecond, 1)}`).join(", ")}`,
    );
  }
}

const PROCESS_LABELS = {
  bullmq: "BullMQ 6.7 (Redis, no persistence)",
  redis: "ours, Redis mode",
  postgres: "ours, PostgreSQL-only",
} as const;

function renderProcesses(out: string[], p: ProcessesPart): void {
  out.push(
    "",
    `Scaling with worker processes: ${fmt(p.builds)} no-op builds submitted first, then processed by N worker processes of ${p.concurrencyPerProcess} builds in flight each (processed/s, median of the runs; x1: over the same system with one process)`,
  );
  out.push(
    table(
      ["system", ...p.counts.map((n) => `${n} process${n === 1 ? "" : "es"}`), "runs"],
      PROCESS_SYSTEMS.map((system) => {
        const points = p.results[system];
        const one = points[0]?.processedPerSec ?? Number.NaN;
        return [
          PROCESS_LABELS[system],
          ...points.map((x) => `${fmt(x.processedPerSec)} (x${fmt(x.processedPerSec / one, 2)})`),
          points.map((x) => x.runs.map((r) => fmt(r)).join("/")).join("; "),
        ];
      }),
    ),
  );
}

const PRESSURE_LABELS: Record<string, string> = {
  redis: "ours, Redis mode",
  postgres: "ours, PostgreSQL-only",
  pgboss: "pg-boss 10.4",
  graphile: "graphile-worker 0.17",
};

/** Redis mode keeps >= 90 % of its clean throughput under each pressure, and its claim p99 within 2x. */
function pressureTargets(p: PressurePart): Target[] {
  const ours = p.systems.redis;
  if (!ours) return [];
  const targets: Target[] = [];
  for (const phase of ["xidHeld", "readers"] as const) {
    const kept = ours[phase].processedPerSec / ours.clean.processedPerSec;
    targets.push({
      target: `Redis mode under ${phase === "xidHeld" ? "an xid held" : `${p.readers} REPEATABLE READ readers`}: >= 90 % of its clean processed/s${p.offeredPerSec ? ` (${p.offeredPerSec} jobs/s offered)` : ""}`,
      measured: `${fmt(100 * kept)} % (${fmt(ours[phase].processedPerSec)}/s of ${fmt(ours.clean.processedPerSec)}/s)`,
      met: kept >= 0.9,
    });
    const clean = ours.clean.claimMs?.p99 ?? Number.NaN;
    const under = ours[phase].claimMs?.p99 ?? Number.NaN;
    targets.push({
      target: `Redis mode under ${phase === "xidHeld" ? "an xid held" : "the readers"}: claim p99 within 2x of clean`,
      measured: `${fmt(under, 1)} ms (clean ${fmt(clean, 1)} ms)`,
      met: under <= 2 * clean,
    });
  }
  return targets;
}

function renderPressure(out: string[], p: PressurePart): void {
  out.push(
    "",
    `Under pressure: phases clean ${p.phaseSeconds.clean} s, xid held ${p.phaseSeconds.xidHeld} s, ${p.readers} REPEATABLE READ readers ${p.phaseSeconds.readers} s (each transaction held ${p.readerHoldSeconds} s); ${p.concurrency} jobs in flight; ${p.note}`,
  );
  const rows: string[][] = [];
  for (const [system, phases] of Object.entries(p.systems)) {
    if (!phases) continue;
    for (const phase of PRESSURE_PHASES) {
      const x = phases[phase];
      rows.push([
        PRESSURE_LABELS[system] ?? system,
        phase,
        fmt(x.processedPerSec),
        `${fmt((100 * x.processedPerSec) / phases.clean.processedPerSec)} %`,
        x.claimMs ? `${fmt(x.claimMs.p50, 1)} / ${fmt(x.claimMs.p99, 1)}` : "-",
        fmt(x.deadTuples),
        `${fmt(x.tableBytes / 2 ** 20, 1)} MiB`,
      ]);
    }
  }
  out.push(
    table(
      [
        "system",
        "phase",
        "processed/s",
        "of clean",
        "claim p50 / p99 ms",
        "dead tuples after",
        "table size after",
      ],
      rows,
    ),
  );
}
