/**
 * Prefetch "auto" (ClaimLoopOptions.prefetch, `oculus worker --prefetch auto`): as many builds held
 * ahead of the slots as the slots finish during one claim's round trip, so a slot never waits for a
 * claim's commit and a build never waits behind others longer than about one claim.
 *
 *   prefetch = floor(concurrency × claim round trip / run time), at most `max`
 *
 * No-op builds (run 0.05 ms, claim 5 ms) get the most; builds of a second or more at any
 * concurrency below 200 get none, like the default: a build of minutes is never held back from an
 * idle worker elsewhere. The run time is the moving average of the handlers that finished, raised
 * to the age of the oldest handler still running, so one long build stops the prefetch at once
 * instead of after its end. Until both have been seen once, nothing is prefetched.
 */

/** Weight of a new sample in the moving averages. */
const SMOOTHING = 0.2;

export class AutoPrefetch {
  /** Moving average of a handler's run time, ms. */
  private runMs: number | undefined;
  /** Moving average of a claim's round trip (claims that returned builds), ms. */
  private claimMs: number | undefined;

  constructor(
    private readonly concurrency: number,
    /** The most it prefetches (default twice the concurrency). */
    readonly max: number = 2 * concurrency,
  ) {}

  observeRun(ms: number): void {
    this.runMs = movingAverage(this.runMs, ms);
  }

  observeClaim(ms: number): void {
    this.claimMs = movingAverage(this.claimMs, ms);
  }

  /** The prefetch now; `oldestRunningMs`: how long the longest-running handler has run (0: none). */
  current(oldestRunningMs: number): number {
    if (this.runMs === undefined || this.claimMs === undefined) return 0;
    const runMs = Math.max(this.runMs, oldestRunningMs);
    if (runMs <= 0) return this.max;
    return Math.min(this.max, Math.floor((this.concurrency * this.claimMs) / runMs));
  }
}

function movingAverage(previous: number | undefined, sample: number): number {
  return previous === undefined ? sample : previous + SMOOTHING * (sample - previous);
}
