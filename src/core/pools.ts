/**
 * Routing: a build's `requires` (worker labels it needs) and the pool it belongs to. Builds with the
 * same requirement set share a pool, named by a canonical id: "default" for no requirements, else
 * "p" + the first 16 hex digits of the SHA-256 of the sorted `k=v` pairs (so {"a":"1","b":"2"} and
 * {"b":"2","a":"1"} are one pool). A worker can run a pool's builds when its labels include every
 * required pair.
 */
import { createHash } from "node:crypto";

export type Requirements = Record<string, string>;

export const DEFAULT_POOL = "default";
/** At most this many required labels per build. */
export const MAX_REQUIRES = 16;
/** Label keys: letters, digits, and . _ / - (what --label k=v can carry unambiguously). */
export const LABEL_KEY_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;
export const MAX_LABEL_VALUE_CHARS = 200;

/** The canonical pool id of a requirement set. */
export function poolIdOf(requires: Requirements): string {
  const pairs = Object.entries(requires)
    .map(([k, v]) => `${k}=${v}`)
    .sort();
  if (pairs.length === 0) return DEFAULT_POOL;
  return `p${createHash("sha256").update(pairs.join("\n")).digest("hex").slice(0, 16)}`;
}

/** True when `labels` include every pair of `requires`. */
export function satisfies(labels: Requirements, requires: Requirements): boolean {
  return Object.entries(requires).every(([k, v]) => Object.hasOwn(labels, k) && labels[k] === v);
}
