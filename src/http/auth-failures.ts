/**
 * A limit on failed authentications per client address (docs/security.md#failed-authentications):
 * after `max` requests answered 401 within a window, the address gets 429 with Retry-After on every
 * route that needs a token until the window ends, before its token is looked at. Requests that
 * authenticate do not count, nor do 403s (a valid token without the scope). The address is
 * `request.ip`: the socket's peer, or the client's behind proxies trusted with OCULUS_TRUST_PROXY
 * (untrusted, every client of a proxy would share one budget).
 *
 * Fixed windows per address, in memory (per process); the table is bounded: when full, expired
 * entries are dropped, then the oldest.
 */
import { RateLimitedError } from "../core/errors.js";
import { wholeNumberFromEnv } from "./transport.js";

export interface AuthFailureLimit {
  /** Failed authentications allowed per address per window. */
  max: number;
  windowMs: number;
}

export const DEFAULT_AUTH_FAILURE_LIMIT: AuthFailureLimit = { max: 60, windowMs: 60_000 };
const VARIABLE = "OCULUS_AUTH_FAILURE_LIMIT";
/** Addresses tracked at once. */
const MAX_ADDRESSES = 10_000;

/** OCULUS_AUTH_FAILURE_LIMIT: failed authentications a minute per address; 0 turns the limit off. */
export function authFailureLimitFromEnv(env: NodeJS.ProcessEnv = process.env): AuthFailureLimit | false {
  const max = wholeNumberFromEnv(
    env,
    VARIABLE,
    { min: 1, max: 1_000_000, offAllowed: true, unit: "" },
    DEFAULT_AUTH_FAILURE_LIMIT.max,
  );
  return max === 0 ? false : { max, windowMs: 60_000 };
}

interface Window {
  failures: number;
  endsAt: number;
}

export class AuthFailureLimiter {
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly limit: AuthFailureLimit,
    private readonly now: () => number = Date.now,
  ) {}

  /** Throws RateLimitedError while the address has used up its failures in this window. */
  check(address: string): void {
    const window = this.windows.get(address);
    if (!window) return;
    const left = window.endsAt - this.now();
    if (left <= 0) {
      this.windows.delete(address);
      return;
    }
    if (window.failures >= this.limit.max) throw new RateLimitedError(Math.max(1, Math.ceil(left / 1000)));
  }

  /** Counts one failed authentication of the address. */
  fail(address: string): void {
    const now = this.now();
    let window = this.windows.get(address);
    if (!window || window.endsAt <= now) {
      this.windows.delete(address);
      this.makeRoom(now);
      window = { failures: 0, endsAt: now + this.limit.windowMs };
      this.windows.set(address, window);
    }
    window.failures += 1;
  }

  /** Addresses with a window open (for tests). */
  get size(): number {
    return this.windows.size;
  }

  private makeRoom(now: number): void {
    if (this.windows.size < MAX_ADDRESSES) return;
    for (const [address, window] of this.windows) {
      if (window.endsAt <= now) this.windows.delete(address);
    }
    // Map order is insertion order: the oldest windows go first.
    for (const address of this.windows.keys()) {
      if (this.windows.size < MAX_ADDRESSES) break;
      this.windows.delete(address);
    }
  }
}
