/**
 * The claim loop, storage-free: it knows how to fetch builds, run them with bounded concurrency and
 * report results, and nothing about Redis or PostgreSQL (the queue gives it `claim`, `wait` and the
 * result calls). A handler that throws fails its build; the loop itself never dies of a handler.
 */
import type { ClaimedBuild } from "../core/build.js";

export interface ClaimLoopDeps {
  claim(count: number): Promise<ClaimedBuild[]>;
  wait(timeoutMs: number, signal: AbortSignal): Promise<void>;
  complete(build: ClaimedBuild, result: unknown): Promise<unknown>;
  fail(build: ClaimedBuild, error: Error): Promise<unknown>;
  /**
   * Hands back claimed builds whose handler never started (prefetched ones still waiting when the
   * loop stops), so that they are queued again at once instead of when their leases run out.
   * Required with a prefetch.
   */
  release?(builds: ClaimedBuild[]): Promise<unknown>;
  onError?(err: unknown): void;
}

export type BuildHandler = (build: ClaimedBuild) => Promise<unknown>;

export interface ClaimLoopOptions {
  concurrency: number;
  /**
   * Builds claimed ahead of free slots (default 0). They wait in the loop, in claim order, and start
   * as slots free, so a handler does not wait for a claim's commit; a claim is made once at least
   * this many builds can be taken (or when nothing is held), so short builds cost fewer, larger
   * claims (no-op builds, concurrency 50, prefetch 100: a third more builds/s). A prefetched build is
   * leased and counts as running in the queue while it waits: keep it 0 for builds much longer than
   * a claim's round trip, which would wait behind the running ones while another worker could run
   * them. Builds still waiting when the loop stops are released (deps.release).
   */
  prefetch?: number;
  /** Longest wait for a wake-up between empty claims. */
  idleWaitMs?: number;
  signal: AbortSignal;
}

/**
 * Runs until `signal` aborts, then resolves once every running build has reported and every waiting
 * one has been released.
 *
 * At most `concurrency` handlers run at once. A slot frees when its handler returns, not when its
 * result has committed, so the next claim overlaps the previous results' commit (with no-op builds
 * the loop otherwise alternates claim, commit, claim, ...). Builds started and not yet reported are
 * bounded by twice the concurrency, plus the prefetch.
 */
export async function runClaimLoop(deps: ClaimLoopDeps, handler: BuildHandler, options: ClaimLoopOptions) {
  const { concurrency, signal } = options;
  const prefetch = options.prefetch ?? 0;
  if (!Number.isInteger(prefetch) || prefetch < 0) {
    throw new RangeError(`prefetch: must be an integer >= 0, got ${String(options.prefetch)}`);
  }
  if (prefetch > 0 && !deps.release) throw new RangeError("prefetch: needs deps.release");
  const idleWaitMs = options.idleWaitMs ?? 1000;
  /** Claimed builds waiting for a slot (prefetched), in claim order. */
  const waiting: ClaimedBuild[] = [];
  /** Handlers running. */
  const running = new Set<Promise<void>>();
  /** Claimed builds whose result is not recorded yet (their handler may be running or done). */
  const unreported = new Set<Promise<void>>();
  let slotFreed: (() => void) | undefined;
  const freeSlot = () => {
    slotFreed?.();
    slotFreed = undefined;
  };
  // A loop waiting for a slot stops at once (prefetched builds are released without waiting for one).
  signal.addEventListener("abort", freeSlot, { once: true });

  const runOne = (build: ClaimedBuild) => {
    const handled = (async () => {
      try {
        return { ok: true as const, result: await handler(build) };
      } catch (err) {
        return { ok: false as const, error: err instanceof Error ? err : new Error(String(err)) };
      }
    })();
    const handling = handled.then(() => {
      running.delete(handling);
      const next = signal.aborted ? undefined : waiting.shift();
      if (next) runOne(next);
      freeSlot();
    });
    running.add(handling);
    const reporting = handled
      .then((outcome) =>
        outcome.ok ? deps.complete(build, outcome.result) : deps.fail(build, outcome.error),
      )
      .then(
        () => undefined,
        (err: unknown) => deps.onError?.(err),
      )
      .finally(() => {
        unreported.delete(reporting);
        freeSlot();
      });
    unreported.add(reporting);
  };

  while (!signal.aborted) {
    const held = running.size + waiting.length;
    const free = Math.min(
      concurrency + prefetch - held,
      2 * concurrency + prefetch - unreported.size - waiting.length,
    );
    // With a prefetch, claim in batches of at least `prefetch` while builds are still held.
    if (free <= 0 || (held > 0 && free < prefetch)) {
      await new Promise<void>((resolve) => {
        slotFreed = resolve;
      });
      continue;
    }
    let builds: ClaimedBuild[] = [];
    try {
      builds = await deps.claim(free);
    } catch (err) {
      deps.onError?.(err);
      await deps.wait(idleWaitMs, signal);
      continue;
    }
    for (const build of builds) {
      if (running.size < concurrency) runOne(build);
      else waiting.push(build);
    }
    if (builds.length === 0) await deps.wait(idleWaitMs, signal);
  }
  const unstarted = waiting.splice(0);
  if (unstarted.length > 0) {
    await deps.release?.(unstarted).catch((err: unknown) => deps.onError?.(err));
  }
  await Promise.all(unreported);
}
