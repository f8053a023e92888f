/** Our queue as the benchmark drives it: open in a given mode, and the product's claim loop. */
import { type BuildHandler, BuildQueue, type ClaimedBuild, runClaimLoop } from "../src/index.js";
import { DATABASE_URL } from "./postgres.js";

export type OurMode = "redis" | "postgres";

export async function openQueue(mode: OurMode, schema: string, redisUrl: string): Promise<BuildQueue> {
  const queue = await BuildQueue.open({
    databaseUrl: DATABASE_URL,
    schema,
    prefix: schema,
    redisUrl: mode === "redis" ? redisUrl : undefined,
    // No periodic drift check during a measurement (the benchmark reconciles on purpose).
    reconcileIntervalMs: 3_600_000,
  });
  if (queue.mode !== mode) {
    await queue.close();
    throw new Error(`queue opened in ${queue.mode} mode, expected ${mode}`);
  }
  return queue;
}

/**
 * A benchmark child process's queue on a schema its parent migrated: Redis mode on the private
 * redis-server at `redisPort`, else PostgreSQL only; throws when it opened in the other mode.
 */
export async function openChildQueue(
  databaseUrl: string,
  schema: string,
  redisPort?: string,
): Promise<BuildQueue> {
  const queue = await BuildQueue.open({
    databaseUrl,
    redisUrl: redisPort ? `redis://127.0.0.1:${redisPort}` : undefined,
    schema,
    prefix: schema,
    migrate: false,
    poolSize: 4,
    reconcileIntervalMs: 3_600_000,
  });
  const expected = redisPort ? "redis" : "postgres";
  if (queue.mode !== expected) {
    await queue.close();
    throw new Error(`queue opened in ${queue.mode} mode, expected ${expected}`);
  }
  return queue;
}

export interface Worker {
  /** True while the claim loop waits for work (idle). */
  readonly idle: boolean;
  /** Stops the loop; resolves once every running build has reported. */
  stop(): Promise<void>;
}

export interface WorkerHooks {
  /** Called after a build's completion committed. */
  onCompleted?(build: ClaimedBuild): void;
  onError(err: unknown): void;
}

/**
 * Starts src/worker/claim-loop.ts against `queue`, as `oculus worker` does; `prefetch`: builds
 * claimed ahead of free slots (ClaimLoopOptions.prefetch, `oculus worker --prefetch`).
 */
export function startWorker(
  queue: BuildQueue,
  handler: BuildHandler,
  concurrency: number,
  hooks: WorkerHooks,
  prefetch: number | "auto" = 0,
): Worker {
  const abort = new AbortController();
  const workerId = `bench-worker-${process.pid}`;
  let idle = false;
  const loop = runClaimLoop(
    {
      claim: (count) => queue.claim(workerId, count),
      wait: async (timeoutMs, signal) => {
        idle = true;
        try {
          await queue.waitForWork(timeoutMs, signal);
        } finally {
          idle = false;
        }
      },
      complete: async (build, result) => {
        await queue.complete(build.id, build.lease, result, { readBack: false });
        hooks.onCompleted?.(build);
      },
      fail: (build, error) => queue.fail(build.id, build.lease, error.message),
      release: (builds) =>
        queue.workers.release(
          workerId,
          builds.map((b) => ({ id: b.id, lease: b.lease })),
        ),
      onError: hooks.onError,
    },
    handler,
    { concurrency, prefetch, signal: abort.signal },
  );
  return {
    get idle() {
      return idle;
    },
    async stop() {
      abort.abort();
      await loop;
    },
  };
}

/** `n` identical submit inputs (a no-op build). */
export function inputs(n: number): { strategyId: string; params: Record<string, unknown> }[] {
  return Array.from({ length: n }, () => ({ strategyId: "bench-noop", params: {} }));
}
