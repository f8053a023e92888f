/**
 * Whether the worker's main thread is wedged: its event loop has not run since a build's timeout
 * came due, and `graceMs` more have passed. A handler that computes without yielding keeps the
 * timeout's timer from firing, while the heartbeat thread goes on extending the build's lease: such
 * a build would be held forever. A loop blocked for long but freed before that is no wedge (a
 * CPU-bound step of a build with no timeout, or one that ends within its timeout, is never one).
 * Runs in the heartbeat thread; every time is monotonicMs, the same clock in both threads.
 */
export interface Wedged {
  id: string;
  /** Since the main thread's event loop last ran. */
  blockedMs: number;
  /** Since the build's timeout came due. */
  pastTimeoutMs: number;
}

export class WedgeWatch {
  private readonly deadlines = new Map<string, number>();
  private lastAliveAt = Number.NEGATIVE_INFINITY;
  private readonly graceMs: number;
  /** A gap this long between two looks means the watching thread itself stood still. */
  private readonly stallMs: number;
  private lastLookAt: number | undefined;
  /** Silence counts from here: the last time the watcher resumed after standing still. */
  private watchingSince = Number.NEGATIVE_INFINITY;

  /**
   * `aliveEveryMs`: how often the event loop says it runs, and how often the watcher looks. A grace
   * shorter than a few of those could take a live loop, whose next word is simply not due yet, for a
   * wedged one.
   */
  constructor(graceMs: number, aliveEveryMs: number) {
    this.graceMs = Math.max(graceMs, 3 * aliveEveryMs);
    this.stallMs = 3 * aliveEveryMs;
  }

  /** A build's timeout came due at `at` (undefined: the build ended, or has none). */
  deadline(id: string, at: number | undefined): void {
    if (at === undefined) this.deadlines.delete(id);
    else this.deadlines.set(id, at);
  }

  /** The main thread's event loop ran at `at`. */
  alive(at: number): void {
    this.lastAliveAt = Math.max(this.lastAliveAt, at);
  }

  /** The build whose timeout the blocked loop missed by more than the grace, if any. */
  wedged(now: number): Wedged | undefined {
    // The watcher stood still too (the whole process was frozen by SIGSTOP, its VM paused, or the
    // machine starved it): the main thread's silence meanwhile proves nothing. It gets a whole grace
    // from now to say it runs, as a frozen and resumed worker is no wedged one.
    if (this.lastLookAt !== undefined && now - this.lastLookAt > this.stallMs) this.watchingSince = now;
    this.lastLookAt = now;
    for (const [id, at] of this.deadlines) {
      // The loop ran after the timeout came due: its timer fired, the handler was told to stop.
      if (this.lastAliveAt >= at) continue;
      if (now - Math.max(at, this.watchingSince) < this.graceMs) continue;
      return { id, blockedMs: now - this.lastAliveAt, pastTimeoutMs: now - at };
    }
    return undefined;
  }
}
