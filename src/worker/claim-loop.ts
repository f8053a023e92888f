/**
 * The claim loop, storage-free: it knows how to fetch builds, run them with bounded concurrency and
 * report results, and nothing about Redis or PostgreSQL (the queue gives it `claim`, `wait` and the
 * result calls). A handler that throws fails its build; the loop itself never dies of a handler.
 */
import type { ClaimedBuild } from "../core/build.js";
import { AutoPrefetch } from "./auto-prefetch.js";

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
   * "auto": as many as the slots finish during one claim's round trip, measured as the loop runs
   * (src/worker/auto-prefetch.ts): the most for builds far shorter than a claim, none for builds of
   * a second or more.
   */
  prefetch?: number | "auto";
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
  const fixedPrefetch = options.prefetch === "auto" ? 0 : (options.prefetch ?? 0);
  if (!Number.isInteger(fixedPrefetch) || fixedPrefetch < 0) {
    throw new RangeError(`prefetch: must be an integer >= 0 or "auto", got ${String(options.prefetch)}`);
  }
  if ((options.prefetch === "auto" || fixedPrefetch > 0) && !deps.release) {
    throw new RangeError("prefetch: needs deps.release");
  }
  const auto = options.prefetch === "auto" ? new AutoPrefetch(concurrency) : undefined;
  const idleWaitMs = options.idleWaitMs ?? 1000;
  /** Claimed builds waiting for a slot (prefetched), in claim order. */
  const waiting: ClaimedBuild[] = [];
  /** Handlers running, with the time each started (oldest first). */
  const running = new Map<Promise<void>, number>();
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
    const startedAt = performance.now();
    const handled = (async () => {
      try {
        return { ok: true as const, result: await handler(build) };
      } catch (err) {
        return { ok: false as const, error: err instanceof Error ? err : new Error(String(err)) };
      }
    })();
    const handling = handled.then(() => {
      running.delete(handling);
      auto?.observeRun(performance.now() - startedAt);
      const next = signal.aborted ? undefined : waiting.shift();
      if (next) runOne(next);
      freeSlot();
    });
    running.set(handling, startedAt);
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

  /** How long the longest-running handler has run, ms (0: none running). */
  const oldestRunningMs = () => {
    const oldest = running.values().next();
    return oldest.done ? 0 : performance.now() - oldest.value;
  };

  while (!signal.aborted) {
    const prefetch = auto ? auto.current(oldestRunningMs()) : fixedPrefetch;
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
      const claimStarted = performance.now();
      builds = await deps.claim(free);
      if (builds.length > 0) auto?.observeClaim(performance.now() - claimStarted);
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
