import { OculusError, StoreUnavailableError } from "../core/errors.js";

/** Error codes (Node's and PostgreSQL's SQLSTATE classes 08, 57P) that mean "PostgreSQL is unreachable". */
const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "57P01",
  "57P02",
  "57P03",
]);

function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" && (CONNECTION_CODES.has(code) || code.startsWith("08"))) return true;
  return /Connection terminated|connection timeout|Client has encountered a connection error/i.test(
    err.message,
  );
}

/**
 * PostgreSQL is the record: when it cannot be reached, an operation fails with a typed, retryable
 * StoreUnavailableError (HTTP 503). Typed errors pass through; anything else is a bug and is rethrown.
 */
export function asStoreError(err: unknown): unknown {
  if (err instanceof OculusError) return err;
  if (isConnectionError(err)) {
    return new StoreUnavailableError(`PostgreSQL is unreachable: ${(err as Error).message}`, err);
  }
  return err;
}
