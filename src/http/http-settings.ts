/**
 * The HTTP hardening settings from the environment (docs/security.md), read together by `oculus up`
 * before it binds a port: a bad value is a ConfigError (exit 2) naming the variable.
 */
import { type AuthFailureLimit, authFailureLimitFromEnv } from "./auth-failures.js";
import { DEFAULT_METRICS_CACHE_MS } from "./metrics.js";
import { allowedHostsFromEnv } from "./open-mode.js";
import { type TransportLimits, transportLimitsFromEnv, wholeNumberFromEnv } from "./transport.js";

export interface HttpHardening {
  limits: TransportLimits;
  allowedHosts: string[];
  authFailureLimit: AuthFailureLimit | false;
  metricsCacheMs: number;
}

/** OCULUS_METRICS_CACHE_MS: how long /metrics reuses its store counts; 0: only while in progress. */
export function metricsCacheFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  return wholeNumberFromEnv(
    env,
    "OCULUS_METRICS_CACHE_MS",
    { min: 100, max: 3_600_000, offAllowed: true, unit: "ms" },
    DEFAULT_METRICS_CACHE_MS,
  );
}

export function httpHardeningFromEnv(env: NodeJS.ProcessEnv = process.env): HttpHardening {
  return {
    limits: transportLimitsFromEnv(env),
    allowedHosts: allowedHostsFromEnv(env),
    authFailureLimit: authFailureLimitFromEnv(env),
    metricsCacheMs: metricsCacheFromEnv(env),
  };
}
