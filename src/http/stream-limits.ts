/**
 * The bounds on the HTTP API's event streams (docs/security.md, "Event streams"): how many streams
 * one client address may hold open, and how far back a stream may resume. Both are settings of
 * `oculus up` (environment variables) and options of buildServer.
 */
import { isIPv4, isIPv6 } from "node:net";
import { ConfigError } from "../core/errors.js";

export interface StreamLimits {
  /** Open event streams per client address (IPv6: per /64); one more is `429 too_many_streams`. */
  maxStreamsPerAddress: number;
  /** A resume (Last-Event-ID) replays at most this many events; further back is `410 resume_too_old`. */
  maxResumeEvents: number;
}

export const DEFAULT_STREAM_LIMITS: StreamLimits = {
  maxStreamsPerAddress: 50,
  maxResumeEvents: 50_000,
};

const VARIABLES: Record<keyof StreamLimits, string> = {
  maxStreamsPerAddress: "OCULUS_HTTP_MAX_STREAMS_PER_ADDRESS",
  maxResumeEvents: "OCULUS_HTTP_MAX_RESUME_EVENTS",
};

/** OCULUS_HTTP_MAX_STREAMS_PER_ADDRESS and OCULUS_HTTP_MAX_RESUME_EVENTS (positive integers; unset: the defaults). */
export function streamLimitsFromEnv(env: NodeJS.ProcessEnv = process.env): StreamLimits {
  return {
    maxStreamsPerAddress: positiveInteger(env, "maxStreamsPerAddress"),
    maxResumeEvents: positiveInteger(env, "maxResumeEvents"),
  };
}

function positiveInteger(env: NodeJS.ProcessEnv, key: keyof StreamLimits): number {
  const name = VARIABLES[key];
  const raw = env[name]?.trim();
  if (!raw) return DEFAULT_STREAM_LIMITS[key];
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(value) || value < 1) {
    throw new ConfigError(`invalid ${name}: must be a positive integer, got "${raw}"`);
  }
  return value;
}

/**
 * What the per-address stream cap counts by: the address as the trust-proxy setting gives it
 * (`request.ip`), an IPv4-mapped IPv6 address as its IPv4 address, and any other IPv6 address by its
 * /64 (one host usually holds a whole /64: counting single addresses would not bound it).
 */
export function streamAddressKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped?.[1]) return mapped[1];
  if (isIPv4(ip) || !isIPv6(ip)) return ip;
  return `${expandIPv6(ip).slice(0, 4).join(":")}::/64`;
}

/** The eight groups of an IPv6 address (no zone, no embedded IPv4 tail expected past the /64). */
function expandIPv6(ip: string): string[] {
  const plain = ip.split("%")[0] ?? ip;
  const [head = "", tail] = plain.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const missing = tail === undefined ? 0 : 8 - left.length - right.length;
  return [...left, ...Array<string>(missing).fill("0"), ...right].map((group) =>
    (Number.parseInt(group, 16) || 0).toString(16),
  );
}
