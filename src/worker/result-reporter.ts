/**
 * The result-retry policy: a build's result (completion, failure, or hand-back) is written until
 * PostgreSQL takes it or refuses it for good. Dropping it would leave the build `running` with nobody
 * working on it: the reaper would requeue a build that had finished, and it would run again.
 *
 * Final answers: StaleLeaseError (the build was taken from this worker: requeued, stopped, released)
 * and InvalidStateError (it is no longer in a state a result can change), and the queue's own
 * refusals of the input (ValidationError, PayloadTooLargeError, BuildNotFoundError), which no retry
 * can change; and a data exception (SQLSTATE class 22: PostgreSQL refuses the input itself, see
 * ReportOutcome). Every other error is retried, typed or raw: a lost connection, a statement timeout or
 * cancel (57014), a deadlock (40P01), a read-only server after a failover (25006), too many
 * connections (53300), the pool's connect timeout, or anything not classified yet. The build's lease
 * is renewed by the heartbeats meanwhile (the worker keeps naming it until the report settles).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { OculusError, StaleLeaseError } from "../core/errors.js";
import type { Logger } from "../core/logger.js";

/**
 * "unstorable": PostgreSQL refused the data itself (SQLSTATE class 22, data exception: what the
 * queue's own checks let through); a retry would be refused the same way, forever.
 */
export type ReportOutcome = "recorded" | "refused" | "unstorable";

export interface RetryPolicy {
  /** First wait after a failed attempt (default 100 ms); doubled each attempt up to maxDelayMs. */
  firstDelayMs: number;
  /** Longest wait between attempts (default 5 s). */
  maxDelayMs: number;
  /** At most one warning per this many ms while a report keeps failing (default 30 s). */
  logEveryMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { firstDelayMs: 100, maxDelayMs: 5000, logEveryMs: 30_000 };

/** The codes of the typed errors that refuse a report for good. */
const FINAL_CODES = new Set([
  "stale_lease",
  "invalid_state",
  "invalid_input",
  "payload_too_large",
  "not_found",
]);

/** True when retrying `err` cannot change the answer. */
export function isFinalRefusal(err: unknown): boolean {
  return err instanceof OculusError && FINAL_CODES.has(err.code);
}

/** A data exception (SQLSTATE class 22): the statement's input can never be stored as it is. */
export function isDataException(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === "string" && /^22[0-9A-Z]{3}$/.test(code);
}

/** The wait before attempt `attempt + 1` (attempt counts from 1): capped doubling, with jitter so that
 * a fleet whose reports all failed at once does not retry in lockstep. */
export function retryDelayMs(attempt: number, policy: RetryPolicy, random = Math.random): number {
  const base = Math.min(policy.maxDelayMs, policy.firstDelayMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(base * (0.75 + 0.5 * random()));
}

export interface ReportOptions {
  buildId: string;
  /** What is reported ("completion", "failure", "release"), for the logs. */
  what: string;
  logger: Logger;
  policy?: RetryPolicy;
  /** Stops the retries: the report then rejects with the last error. */
  signal?: AbortSignal;
}

/**
 * Runs `write` until it resolves ("recorded") or fails with a final refusal ("refused", or
 * "unstorable" for a data exception; the error is logged). Rejects only when `signal` aborts first (with the last error). Warnings are rate-limited: the
 * first failure, then at most one per `logEveryMs` with the attempts so far, and one line when the
 * report finally goes through.
 */
export async function reportUntilSettled(
  write: () => Promise<unknown>,
  options: ReportOptions,
): Promise<ReportOutcome> {
  const policy = options.policy ?? DEFAULT_RETRY_POLICY;
  const { buildId, what, logger } = options;
  let lastWarnedAt = Number.NEGATIVE_INFINITY;
  for (let attempt = 1; ; attempt++) {
    try {
      await write();
      if (attempt > 1) logger.info({ buildId, attempts: attempt }, `${what} recorded after retries`);
      return "recorded";
    } catch (err) {
      if (isFinalRefusal(err)) {
        const message =
          err instanceof StaleLeaseError
            ? "result refused: the build was taken from this worker"
            : `${what} refused`;
        logger.warn({ buildId, err: (err as Error).message }, message);
        return "refused";
      }
      if (isDataException(err)) {
        logger.error({ buildId, err: errorText(err) }, `PostgreSQL cannot store the ${what}`);
        return "unstorable";
      }
      if (options.signal?.aborted) throw err;
      const now = performance.now();
      if (now - lastWarnedAt >= policy.logEveryMs) {
        lastWarnedAt = now;
        logger.warn(
          { buildId, attempts: attempt, err: errorText(err) },
          `cannot record the ${what} yet; retrying until PostgreSQL takes it`,
        );
      }
      await sleep(retryDelayMs(attempt, policy), undefined, { signal: options.signal }).catch(
        () => undefined,
      );
    }
  }
}

function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" ? `${code}: ${err.message}` : err.message;
}
