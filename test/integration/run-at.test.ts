/**
 * `runAt` on submit (issue 14): a build is not claimed before its time, then runs in its place in
 * dispatch order; a time already past runs at once; a bad time is a 400 naming the field and writes
 * nothing. On every backend (Redis, PostgreSQL, PGlite).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BuildQueue, ValidationError } from "../../src/index.js";
import { backends } from "../helpers/backends.js";
import { eventually } from "../helpers/queue.js";

describe.each(backends())("runAt on $name", (backend) => {
  let queue: BuildQueue;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ queue, cleanup } = await backend.open(`run_at_${backend.name}`));
  });
  afterAll(async () => {
    await cleanup?.();
    await backend.teardown();
  });

  it("holds a build until its runAt, then it is claimed", async () => {
    const runAt = new Date(Date.now() + 1500);
    const { build, position } = await queue.submit({ strategyId: "later", runAt: runAt.toISOString() });
    expect(build.status).toBe("queued");
    expect(build.runAt.getTime()).toBeGreaterThanOrEqual(runAt.getTime() - 5);
    expect(position).toBeNull();
    expect(await queue.claim("w", 5)).toEqual([]);
    expect(await queue.counts()).toEqual({ ready: 0, delayed: 1 });
    const [claimed] = await eventually(async () => {
      const got = await queue.claim("w", 5);
      return got.length > 0 ? got : undefined;
    }, 20_000);
    expect(claimed?.id).toBe(build.id);
    // PostgreSQL decided it was due: never before its time by PostgreSQL's clock (a little skew allowed).
    expect(claimed?.startedAt?.getTime()).toBeGreaterThanOrEqual(runAt.getTime() - 1000);
    await queue.complete(build.id, claimed?.lease ?? 0);
  });

  it("runs a build whose runAt is already past at once", async () => {
    const { build, position } = await queue.submit({
      strategyId: "past",
      runAt: new Date(Date.now() - 60_000).toISOString(),
    });
    expect(position).toBe(1);
    const [claimed] = await queue.claim("w", 1);
    expect(claimed?.id).toBe(build.id);
    await queue.complete(build.id, claimed?.lease ?? 0);
  });

  it("refuses a bad runAt, naming the field, and writes nothing", async () => {
    const before = await queue.counts();
    for (const runAt of [
      "tomorrow",
      "2026-12-24",
      1234,
      new Date(Date.now() + 400 * 86_400_000).toISOString(),
    ]) {
      const err = await queue.submit({ strategyId: "x", runAt } as never).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, String(runAt)).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).message).toContain("runAt");
    }
    expect(await queue.counts()).toEqual(before);
  });
});
