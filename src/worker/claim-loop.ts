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

/** Runs until `signal` aborts, then resolves once every running build has reported. */
export async function runClaimLoop(deps: ClaimLoopDeps, handler: BuildHandler, options: ClaimLoopOptions) {
  const { concurrency, signal } = options;
  const idleWaitMs = options.idleWaitMs ?? 1000;
  const running = new Set<Promise<void>>();
  let slotFreed: (() => void) | undefined;

  const runOne = async (build: ClaimedBuild) => {
    try {
      let result: unknown;
      try {
        result = await handler(build);
      } catch (err) {
        await deps.fail(build, err instanceof Error ? err : new Error(String(err)));
        return;
      }
      await deps.complete(build, result);
    } catch (err) {
      deps.onError?.(err);
    }
  };

  while (!signal.aborted) {
    const free = concurrency - running.size;
    if (free === 0) {
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
      const task = runOne(build).finally(() => {
        running.delete(task);
        slotFreed?.();
        slotFreed = undefined;
      });
      running.add(task);
    }
    if (builds.length === 0) await deps.wait(idleWaitMs, signal);
  }
  await Promise.all(running);
}
