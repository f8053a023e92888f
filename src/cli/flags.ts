/** Parsers for command-line flags and their environment variables: each names the flag in its error. */
import { InvalidArgumentError } from "commander";
import { ConfigError, OculusError } from "../core/errors.js";
import { LABEL_KEY_PATTERN } from "../core/pools.js";

const DAY_MS = 86_400_000;

export function nonNegativeInt(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0)
      throw new InvalidArgumentError(`${flag} must be a non-negative integer, got "${value}"`);
    return n;
  };
}

/** `--prefetch` / OCULUS_PREFETCH: a whole number of builds, or "auto" (src/worker/auto-prefetch.ts). */
export function parsePrefetch(flag: string) {
  const count = nonNegativeInt(flag);
  return (value: string): number | "auto" => {
    if (value === "auto") return "auto";
    try {
      return count(value);
    } catch {
      throw new InvalidArgumentError(`${flag} must be a non-negative integer or "auto", got "${value}"`);
    }
  };
}

export function positiveInt(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1)
      throw new InvalidArgumentError(`${flag} must be a positive integer, got "${value}"`);
    return n;
  };
}

/**
 * A number of days, more than 0 (fractions allowed: 0.5 is twelve hours). Used by
 * `up --retention-days` / OCULUS_RETENTION_DAYS and `prune --older-than-days`.
 */
export function parseDays(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n <= 0) {
      throw new ConfigError(`invalid ${flag}: must be a number of days greater than 0, got "${value}"`);
    }
    return n;
  };
}

/** A TCP port, 0..65535 (0: any free port), for `flag` (name the environment variable in it too). */
export function parsePortFlag(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isInteger(n) || n < 0 || n > 65535) {
      throw new ConfigError(`invalid ${flag}: must be an integer from 0 to 65535, got "${value}"`);
    }
    return n;
  };
}

/** Days to milliseconds (prune's olderThanMs). */
export function daysToMs(days: number): number {
  return Math.round(days * DAY_MS);
}

/** OCULUS_BUILD_LOG_MAX_BYTES: the cap of one build's stored log, in bytes (undefined: the default). */
export function logMaxBytesFromEnv(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const raw = env.OCULUS_BUILD_LOG_MAX_BYTES?.trim();
  if (!raw) return undefined;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < 1024) {
    throw new ConfigError(
      `invalid OCULUS_BUILD_LOG_MAX_BYTES: must be a number of bytes, at least 1024, got "${raw}"`,
    );
  }
  return n;
}

/** `--label k=v` (repeatable): the worker's labels; builds whose `requires` they include run here. */
export function parseLabels(pairs: string[], flag = "--label"): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const pair of pairs) {
    const [key, ...rest] = pair.split("=");
    if (!key || rest.length === 0) {
      throw new OculusError("config_invalid", 2, `${flag}: expected key=value, got "${pair}"`);
    }
    if (!LABEL_KEY_PATTERN.test(key)) {
      throw new OculusError(
        "config_invalid",
        2,
        `${flag}: key "${key}" must be 1-63 letters, digits, '.', '_', '/' or '-'`,
      );
    }
    labels[key] = rest.join("=");
  }
  return labels;
}
