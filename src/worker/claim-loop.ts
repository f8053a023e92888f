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
  onError?(err: unknown): void;
}

export type BuildHandler = (build: ClaimedBuild) => Promise<unknown>;

export interface ClaimLoopOptions {
  concurrency: number;
  /** Longest wait for a wake-up between empty claims. */
  idleWaitMs?: number;
  signal: AbortSignal;
}

/**
 * Runs until `signal` aborts, then resolves once every running build has reported.
 *
 * At most `concurrency` handlers run at once. A slot frees when its handler returns, not when its
 * result has committed, so the next claim overlaps the previous results' commit (with no-op builds
 * the loop otherwise alternates claim, commit, claim, ...). Builds claimed and not yet reported are
 * bounded by twice the concurrency.
 */
export async function runClaimLoop(deps: ClaimLoopDeps, handler: BuildHandler, options: ClaimLoopOptions) {
  const { concurrency, signal } = options;
  const idleWaitMs = options.idleWaitMs ?? 1000;
  /** Handlers running. */
  const running = new Set<Promise<void>>();
  /** Claimed builds whose result is not recorded yet (their handler may be running or done). */
  const unreported = new Set<Promise<void>>();
  let slotFreed: (() => void) | undefined;
  const freeSlot = () => {
    slotFreed?.();
    slotFreed = undefined;
  };

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
    const free = Math.min(concurrency - running.size, 2 * concurrency - unreported.size);
    if (free <= 0) {
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
    for (const build of builds) runOne(build);
    if (builds.length === 0) await deps.wait(idleWaitMs, signal);
  }
  await Promise.all(unreported);
}
