/**
 * A queue's mode changes with their times (the "mode" event), and how long it ran on PostgreSQL after
 * a fault: what the failover tests report.
 */
import type { BuildQueue } from "../../src/index.js";

export interface ModeLog {
  modes: { mode: string; at: number; cause?: string }[];
}

export function watchModes(queue: BuildQueue): ModeLog {
  const log: ModeLog = { modes: [] };
  queue.on("mode", (mode: string, cause?: Error) =>
    log.modes.push({ mode, at: Date.now(), ...(cause ? { cause: cause.message } : {}) }),
  );
  return log;
}

/** Milliseconds from the first switch to PostgreSQL after `since` to the next switch back to Redis. */
export function runOnPostgres(log: ModeLog, since: number): number | undefined {
  const down = log.modes.find((m) => m.mode === "postgres" && m.at >= since);
  if (!down) return undefined;
  const up = log.modes.find((m) => m.mode === "redis" && m.at >= down.at);
  return up ? up.at - down.at : undefined;
}
