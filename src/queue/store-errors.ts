/**
 * The one place that decides what a PostgreSQL error means for the caller. An error that says "the
 * record is away or cannot take this right now" (down, restarting, failing over, read-only, out of
 * connections, too slow, a conflict with another transaction) becomes a typed, retryable
 * StoreUnavailableError (HTTP 503 + Retry-After), with a reason; everything else (a bug, the caller's
 * fault, a typed error) passes through unchanged. Every path that converts store errors asks here.
 */
import { OculusError, StoreUnavailableError, type StoreUnavailableReason } from "../core/errors.js";

export interface TransientStoreError {
  reason: StoreUnavailableReason;
  retryAfterSeconds: number;
}

/** Seconds to wait before retrying, per reason: a failover or a restart takes longer than a busy pool. */
const RETRY_AFTER_SECONDS: Record<StoreUnavailableReason, number> = {
  unreachable: 2,
  read_only: 5,
  busy: 1,
  timeout: 1,
  conflict: 1,
};

/** Node's socket errors: no route to, or no answer from, the server. */
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNABORTED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
]);

/** SQLSTATEs (exact) and their reasons. */
const SQLSTATE_REASONS: Record<string, StoreUnavailableReason> = {
  // read_only_sql_transaction: a standby, a demoted primary, or default_transaction_read_only. The
  // pool (db.ts, ConnectionGenerations) also drops every connection opened before such an answer: one
  // to a demoted server stays read-only for good, while the address may reach the new primary.
  "25006": "read_only",
  "25P03": "timeout", // idle_in_transaction_session_timeout ended the session
  "25P04": "timeout", // transaction_timeout (PostgreSQL 17)
  "55P03": "busy", // lock_not_available
  "57014": "timeout", // query_canceled: statement_timeout, or a cancel
  // 57P0x end the session (db.ts drops the connection; the next one goes through the address again).
  "57P01": "unreachable", // admin_shutdown (also pg_terminate_backend)
  "57P02": "unreachable", // crash_shutdown
  "57P03": "unreachable", // cannot_connect_now (starting up, shutting down, in recovery)
  "57P05": "unreachable", // idle_session_timeout
};

/** SQLSTATE classes and their reasons. */
const SQLSTATE_CLASS_REASONS: Record<string, StoreUnavailableReason> = {
  "08": "unreachable", // connection exception
  "40": "conflict", // transaction rollback: serialization failure 40001, deadlock 40P01
  "53": "busy", // insufficient resources: too many connections 53300, disk full, out of memory
};

/** Messages of `pg` and `pg-pool` (they carry no code) and what they mean. */
const MESSAGE_REASONS: [RegExp, StoreUnavailableReason][] = [
  [/Query read timeout/i, "timeout"],
  [/timeout exceeded when trying to connect/i, "busy"],
  [/Connection terminated|connection timeout|timeout expired|server closed the connection/i, "unreachable"],
  [/Client has encountered a connection error|Client was closed and is not queryable/i, "unreachable"],
];

/**
 * The transient reason of an error from PostgreSQL or its driver; undefined when the error is not
 * one (a constraint, a syntax error, a bug): it must not be retried blindly.
 */
export function classifyStoreError(err: unknown): TransientStoreError | undefined {
  if (err instanceof StoreUnavailableError) {
    return { reason: err.reason, retryAfterSeconds: err.retryAfterSeconds };
  }
  if (!(err instanceof Error) || err instanceof OculusError) return undefined;
  const reason = reasonOf(err);
  return reason ? { reason, retryAfterSeconds: RETRY_AFTER_SECONDS[reason] } : undefined;
}

function reasonOf(err: Error): StoreUnavailableReason | undefined {
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string") {
    if (NETWORK_CODES.has(code)) return "unreachable";
    const exact = SQLSTATE_REASONS[code];
    if (exact) return exact;
    if (/^[0-9A-Z]{5}$/.test(code)) return SQLSTATE_CLASS_REASONS[code.slice(0, 2)];
  }
  for (const [pattern, reason] of MESSAGE_REASONS) if (pattern.test(err.message)) return reason;
  // A connect error may hide its cause (AggregateError of every address tried, `cause` chains).
  const nested = [
    ...((err as { errors?: unknown[] }).errors ?? []),
    (err as { cause?: unknown }).cause,
  ].filter((e): e is Error => e instanceof Error && e !== err);
  for (const inner of nested) {
    const found = reasonOf(inner);
    if (found) return found;
  }
  return undefined;
}

/** True when the error is one the caller should retry later (the record is away or busy). */
export function isTransientStoreError(err: unknown): boolean {
  return classifyStoreError(err) !== undefined;
}

const DESCRIPTIONS: Record<StoreUnavailableReason, string> = {
  unreachable: "PostgreSQL is unreachable",
  read_only: "PostgreSQL is read-only",
  busy: "PostgreSQL is busy",
  timeout: "PostgreSQL did not answer in time",
  conflict: "PostgreSQL aborted the transaction (conflict)",
};

/**
 * PostgreSQL is the record: when it cannot take an operation right now, the operation fails with a
 * typed, retryable StoreUnavailableError (HTTP 503). Typed errors pass through; anything else is the
 * caller's fault or a bug and is returned unchanged (the caller rethrows it).
 */
export function asStoreError(err: unknown): unknown {
  if (err instanceof OculusError) return err;
  const transient = classifyStoreError(err);
  if (!transient) return err;
  return new StoreUnavailableError(
    `${DESCRIPTIONS[transient.reason]}: ${(err as Error).message}`,
    err,
    transient,
  );
}
