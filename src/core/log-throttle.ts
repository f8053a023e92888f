/**
 * Rate-limits repeated log lines of the same kind. A fault that persists (a Redis that refuses
 * writes, an old master back as a replica) makes the same attempt fail again and again; logging each
 * failure buried the logs (376 warnings in a few minutes per process after one Sentinel promotion).
 * The first failure of a kind is logged at once; later ones at most once per `intervalMs`, with the
 * number of failures left out since the last line. A success of that kind (`reset`) re-arms it, so
 * the next fault is logged at once again.
 */
import type { Logger } from "./logger.js";

export const DEFAULT_LOG_INTERVAL_MS = 30_000;

type Level = "warn" | "error" | "info";

interface KindState {
  lastAt: number;
  suppressed: number;
}

export class LogThrottle {
  private readonly kinds = new Map<string, KindState>();

  constructor(
    private readonly logger: Logger,
    private readonly intervalMs = DEFAULT_LOG_INTERVAL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Logs `msg` at `level` unless a line of this `kind` went out less than `intervalMs` ago; returns
   * whether it logged. A logged line carries `suppressed`: the lines of this kind left out since the
   * previous one.
   */
  log(level: Level, kind: string, fields: Record<string, unknown>, msg: string): boolean {
    const state = this.kinds.get(kind);
    const now = this.now();
    if (state && now - state.lastAt < this.intervalMs) {
      state.suppressed += 1;
      return false;
    }
    const suppressed = state?.suppressed ?? 0;
    this.kinds.set(kind, { lastAt: now, suppressed: 0 });
    this.logger[level](suppressed > 0 ? { ...fields, suppressed } : fields, msg);
    return true;
  }

  warn(kind: string, fields: Record<string, unknown>, msg: string): boolean {
    return this.log("warn", kind, fields, msg);
  }

  /** The fault of this kind is over: the next one is logged at once. */
  reset(kind: string): void {
    this.kinds.delete(kind);
  }
}

/**
 * Exponential backoff for a retried attempt: `initialMs`, doubling after each failure up to `maxMs`;
 * `reset()` after a success.
 */
export class Backoff {
  private failures = 0;

  constructor(
    private readonly initialMs = 500,
    private readonly maxMs = 30_000,
  ) {}

  /** The delay before the next attempt. */
  get delayMs(): number {
    return Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.failures, 30));
  }

  failed(): void {
    this.failures += 1;
  }

  reset(): void {
    this.failures = 0;
  }
}
