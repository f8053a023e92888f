/** The chaos suite's results: one object (--json) or a table with the notes under it. */
import { fmt, table } from "../text.js";

export interface PhaseResult {
  name: string;
  fault: string;
  windowSec: number;
  submitRatePerSec: number;
  acknowledged: number;
  /** Submits not acknowledged, by kind (HTTP status, timeout, connection). */
  refused: Record<string, number>;
  completed: number;
  failed: number;
  stopped: number;
  lost: number;
  lostSample: { id: string; status: string }[];
  doubleRun: number;
  doubleSample: string[];
  legitimateReruns: number;
  runs: number;
  died: number;
  deaths: { name: string; code: number | null; signal: string | null; reason: string }[];
  /** Completions a second during the fault window, and over the whole load. */
  completedPerSec: number;
  completedPerSecLoad: number;
  vsClean: number | null;
  claimWaitP50Ms: number;
  claimWaitP99Ms: number;
  recoverSec: number | null;
  settleSec: number;
  notes: string[];
  details: Record<string, unknown>;
  /** The harness itself failed in this phase (the figures may be partial). */
  error?: string;
}

export interface ChaosResults {
  date: string;
  command: string;
  machine: {
    nproc: number;
    loadAverageStart: number;
    loadAverageEnd: number;
    node: string;
    postgres: string;
    redis: string;
  };
  options: Record<string, unknown>;
  capacityPerSec: number;
  steadyRatePerSec: number;
  durationSec: number;
  runDir: string;
  phases: PhaseResult[];
  /** No phase lost a build, ran one twice, or had a process die. */
  ok: boolean;
}

export function phaseOk(p: PhaseResult): boolean {
  return p.lost === 0 && p.doubleRun === 0 && p.died === 0 && p.error === undefined;
}

function refusedNote(refused: Record<string, number>): string | undefined {
  const parts = Object.entries(refused).map(([kind, n]) => `${kind} x${n}`);
  return parts.length > 0 ? `not acknowledged: ${parts.join(", ")}` : undefined;
}

/** The first deaths with their reason; the rest counted by reason (a supervisor restarting a process that dies at start makes many). */
function deathNotes(deaths: PhaseResult["deaths"]): string[] {
  const shown = deaths.slice(0, 4).map((d) => `died: ${d.name} (exit ${d.code ?? d.signal}): ${d.reason}`);
  const rest = new Map<string, number>();
  for (const d of deaths.slice(4)) rest.set(d.reason, (rest.get(d.reason) ?? 0) + 1);
  return [...shown, ...[...rest].map(([reason, n]) => `died: ${n} more: ${reason}`)];
}

export function renderText(r: ChaosResults): string {
  const head = [
    "phase",
    "acked",
    "completed",
    "failed",
    "lost",
    "double-run",
    "died",
    "completed/s",
    "vs clean",
    "claim p99 ms",
    "recover s",
  ];
  const rows = r.phases.map((p) => [
    p.name,
    fmt(p.acknowledged),
    fmt(p.completed),
    fmt(p.failed),
    fmt(p.lost),
    fmt(p.doubleRun),
    fmt(p.died),
    fmt(p.completedPerSec, 1),
    p.vsClean === null ? "-" : `${fmt(p.vsClean * 100)} %`,
    fmt(p.claimWaitP99Ms),
    p.recoverSec === null ? (p.name === "clean" ? "-" : "never") : fmt(p.recoverSec, 1),
  ]);
  const notes = r.phases.flatMap((p) => {
    const lines = [
      ...p.notes,
      refusedNote(p.refused),
      p.failed > 0 ? `${p.failed} builds ended failed` : undefined,
      ...deathNotes(p.deaths),
      ...p.doubleSample.map((s) => `double run: ${s}`),
      ...p.lostSample.map((l) => `lost: ${l.id} (${l.status})`),
      p.legitimateReruns > 0
        ? `${p.legitimateReruns} reruns after a worker exit or abort (allowed)`
        : undefined,
      p.error ? `HARNESS ERROR: ${p.error}` : undefined,
    ].filter((l): l is string => l !== undefined);
    return lines.length > 0 ? [`${p.name}:`, ...lines.map((l) => `  - ${l}`)] : [];
  });
  const verdict = r.ok
    ? "every phase: nothing lost, nothing run twice, no process died"
    : `FAILED phases: ${r.phases
        .filter((p) => !phaseOk(p))
        .map((p) => p.name)
        .join(", ")}`;
  return [
    `npm run chaos: ${r.date}, ${r.machine.nproc} CPUs, load average ${fmt(r.machine.loadAverageStart, 2)} at the start, ${fmt(r.machine.loadAverageEnd, 2)} at the end; PostgreSQL ${r.machine.postgres} (private cluster, fsync on), Redis ${r.machine.redis} (AOF everysec); ${fmt(r.durationSec)} s`,
    `capacity (calibrated) ${fmt(r.capacityPerSec, 1)} builds/s; steady load ${fmt(r.steadyRatePerSec, 1)} submits/s; logs and run files in ${r.runDir}`,
    "",
    table(head, rows),
    "",
    ...notes,
    "",
    verdict,
  ].join("\n");
}
