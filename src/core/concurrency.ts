/**
 * Concurrency keys: a build may carry a `concurrencyKey`; at most the key's limit (default 1, set with
 * `oculus limits set KEY N`, PUT /v1/limits/:key or BuildQueue.setLimit) of its builds run at once.
 * The others wait, in order, without holding up builds of other keys (admission: see
 * docs/architecture.md, "Concurrency keys", and migration 0011).
 */
import { z } from "zod";
import { ValidationError } from "./errors.js";

export const MAX_CONCURRENCY_KEY_CHARS = 200;
/** The largest limit accepted (a key that needs more needs no limit). */
export const MAX_CONCURRENCY_LIMIT = 100_000;
export const DEFAULT_CONCURRENCY_LIMIT = 1;

// biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
const NON_PRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/** A concurrency key as the submit body and the limits routes accept it. */
export const concurrencyKeySchema = z
  .string({ error: "must be a string" })
  .min(1, "must not be empty")
  .max(MAX_CONCURRENCY_KEY_CHARS, `must be at most ${MAX_CONCURRENCY_KEY_CHARS} characters`)
  .refine((key) => !NON_PRINTABLE.test(key), "must be printable (no control or bidi characters)")
  .refine((key) => key.trim() === key, "must not start or end with whitespace");

/** A key's limit: a positive integer. */
export const concurrencyLimitSchema = z
  .number({ error: "must be a number" })
  .int("must be a positive integer")
  .min(1, "must be a positive integer")
  .max(MAX_CONCURRENCY_LIMIT, `must be at most ${MAX_CONCURRENCY_LIMIT}`);

function parseWith<T>(schema: z.ZodType<T>, value: unknown, field: string): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new ValidationError(field, parsed.error.issues[0]?.message ?? "is invalid");
  return parsed.data;
}

export function parseConcurrencyKey(value: unknown, field = "key"): string {
  return parseWith(concurrencyKeySchema, value, field);
}

export function parseConcurrencyLimit(value: unknown, field = "limit"): number {
  return parseWith(concurrencyLimitSchema, value, field);
}

/** A key's limit and how its builds stand (BuildQueue.limit, limits). */
export interface ConcurrencyLimit {
  key: string;
  /** At most this many of the key's builds run at once. */
  limit: number;
  /** Running or stopping builds of the key. */
  running: number;
  /** Queued builds of the key that hold a slot (claimable now, or waiting out a retry backoff). */
  admitted: number;
  /** Queued builds of the key waiting for a slot. */
  waiting: number;
  /** When the limit was last set (or the key first used); null for a key never seen. */
  updatedAt: Date | null;
}

/** What a queued build held back by its key's limit waits on (GET /v1/builds/:id, /v1/queue). */
export interface WaitingOn {
  concurrencyKey: string;
  running: number;
  limit: number;
}
