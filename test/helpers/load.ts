/**
 * In-process load for the fault tests: a submit loop and claim+complete loops on BuildQueues, running
 * until stopped, that record every build whose submit returned, every claim, and every caller-visible
 * error. Claim loops can be paused (and report when they are idle), so a test can look at the index.
 */
import type { BuildQueue } from "../../src/index.js";

export interface LoadErrors {
  op: string;
  message: string;
}

export class Load {
  /** Ids of builds whose submit returned. */
  readonly submitted = new Set<string>();
  /** Build id -> the claims this process got (worker and lease). */
  readonly claims = new Map<string, { worker: string; lease: number }[]>();
  readonly completed = new Set<string>();
  readonly errors: LoadErrors[] = [];
  private submitting = false;
  private claiming = false;
  private paused = false;
  private inFlight = 0;
  private readonly loops: Promise<void>[] = [];
  private counter = 0;

  private record(op: string, err: unknown): void {
    this.errors.push({ op, message: String((err as Error)?.message ?? err) });
  }

  /** Submits one build, then a few at once, in turn, until stopSubmits(). */
  startSubmits(queue: BuildQueue, pauseMs = 2): void {
    this.submitting = true;
    this.loops.push(
      (async () => {
        while (this.submitting) {
          const n = ++this.counter;
          try {
            if (n % 2 === 0) {
              const r = await queue.submit({ strategyId: "load", priority: n % 5, params: { n } });
              this.submitted.add(r.build.id);
            } else {
              const inputs = Array.from({ length: 1 + (n % 10) }, (_, i) => ({
                strategyId: "load",
                priority: (n + i) % 5,
                params: { n, i },
              }));
              for (const r of await queue.submitMany(inputs)) this.submitted.add(r.build.id);
            }
          } catch (err) {
            this.record("submit", err);
          }
          await new Promise((r) => setTimeout(r, pauseMs));
        }
      })(),
    );
  }

  stopSubmits(): void {
    this.submitting = false;
  }

  /** Claims (batches of 1..10) and completes each with its lease, until stop(). */
  startClaims(queue: BuildQueue, worker: string): void {
    this.claiming = true;
    this.loops.push(
      (async () => {
        while (this.claiming) {
          if (this.paused) {
            await new Promise((r) => setTimeout(r, 10));
            continue;
          }
          this.inFlight++;
          try {
            const builds = await queue.claim(worker, 1 + Math.floor(Math.random() * 10));
            for (const b of builds) {
              const list = this.claims.get(b.id) ?? [];
              list.push({ worker, lease: b.lease });
              this.claims.set(b.id, list);
            }
            await Promise.all(
              builds.map(async (b) => {
                try {
                  await queue.complete(b.id, b.lease, { worker });
                  this.completed.add(b.id);
                } catch (err) {
                  this.record("complete", err);
                }
              }),
            );
            if (builds.length === 0) await queue.waitForWork(50);
          } catch (err) {
            this.record("claim", err);
            await new Promise((r) => setTimeout(r, 20));
          } finally {
            this.inFlight--;
          }
        }
      })(),
    );
  }

  /** Stops claiming new builds; resolves once no claim or completion is in flight. */
  async pauseClaims(): Promise<void> {
    this.paused = true;
    while (this.inFlight > 0) await new Promise((r) => setTimeout(r, 10));
  }

  resumeClaims(): void {
    this.paused = false;
  }

  /** Ids claimed more than once in this process. */
  duplicateClaims(): [string, { worker: string; lease: number }[]][] {
    return [...this.claims].filter(([, list]) => list.length !== 1);
  }

  async stop(): Promise<void> {
    this.submitting = false;
    this.claiming = false;
    await Promise.all(this.loops);
  }
}
