/**
 * Concurrency per key and supersede (issue 14): at most the key's limit of its builds run at once,
 * the others wait in order without holding up other builds; raising a limit admits waiting builds at
 * once, lowering it holds back admitted ones; `supersede: true` stops the still-queued builds of the
 * same strategy. Run on every backend (Redis fast path, PostgreSQL only, PGlite).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Build, type BuildQueue, type ClaimedBuild, ValidationError } from "../../src/index.js";
import { backends } from "../helpers/backends.js";
import { eventually } from "../helpers/queue.js";

let keyCounter = 0;
const freshKey = (name: string) => `${name}-${process.pid}-${++keyCounter}`;

/** Claims and completes everything claimable (completions admit the next builds of their keys). */
async function drainAll(queue: BuildQueue): Promise<void> {
  for (;;) {
    const claimed = await queue.claim("drainer", 500);
    if (claimed.length === 0) return;
    await Promise.all(claimed.map((b) => queue.complete(b.id, b.lease)));
  }
}

/** The most builds of `key` that were running at once, from the record's events (id order). */
async function maxRunningFromEvents(queue: BuildQueue, ids: Set<string>): Promise<number> {
  const res = await queue.store.db.query<{ build_id: string; type: string; to_status: string }>(
    "SELECT build_id, type, to_status FROM build_events WHERE build_id = ANY ($1::uuid[]) ORDER BY id",
    [[...ids]],
  );
  let running = 0;
  let max = 0;
  for (const e of res.rows) {
    if (e.type === "claimed") running += 1;
    else if (["completed", "failed", "stopped", "requeued", "released", "retry_scheduled"].includes(e.type)) {
      if (e.type !== "stopped" || e.to_status === "stopped") running -= 1;
    }
    max = Math.max(max, running);
  }
  return max;
}

describe.each(backends())("concurrency keys on $name", (backend) => {
  let queue: BuildQueue;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ queue, cleanup } = await backend.open(`concurrency_${backend.name}`));
    expect(queue.mode).toBe(backend.expectedMode);
  });
  afterAll(async () => {
    await cleanup?.();
    await backend.teardown();
  });

  it("runs one build of a key at a time by default, without holding up other builds", async () => {
    await drainAll(queue);
    const key = freshKey("deploy");
    const [a, b, c] = await queue.submitMany([
      { strategyId: "k1", concurrencyKey: key, priority: 10 },
      { strategyId: "k1", concurrencyKey: key, priority: 10 },
      { strategyId: "k1", concurrencyKey: key, priority: 10 },
    ]);
    const other = await queue.submit({ strategyId: "free", priority: 0 });
    expect(a?.build.held).toBe(false);
    expect(b?.build.held).toBe(true);
    const claimed = await queue.claim("w1", 10);
    // The key's first build and the lower-priority build without a key; the key's others wait.
    expect(claimed.map((x) => x.id)).toEqual([a?.build.id, other.build.id]);
    const waiting = await queue.get(b?.build.id ?? "");
    expect(waiting).toMatchObject({ status: "queued", held: true, concurrencyKey: key });
    expect(await queue.waitingOn(waiting)).toEqual({ concurrencyKey: key, running: 1, limit: 1 });
    expect(await queue.position(waiting.id)).toBeNull();
    expect(await queue.claim("w2", 10)).toEqual([]);
    expect(await queue.limit(key)).toMatchObject({ key, limit: 1, running: 1, admitted: 0, waiting: 2 });
    // Its end frees the slot: the next build of the key (in submit order) is claimable at once.
    const first = claimed.find((x) => x.id === a?.build.id) as ClaimedBuild;
    await queue.complete(first.id, first.lease);
    const next = await queue.claim("w2", 10);
    expect(next.map((x) => x.id)).toEqual([b?.build.id]);
    await queue.fail(next[0]?.id ?? "", next[0]?.lease ?? 0, "broken", { retryable: false });
    const last = await queue.claim("w2", 10);
    expect(last.map((x) => x.id)).toEqual([c?.build.id]);
    await queue.complete(last[0]?.id ?? "", last[0]?.lease ?? 0);
    await queue.complete(other.build.id, claimed[1]?.lease ?? 0);
  });

  it("keeps exact priority + FIFO order among the builds waiting on a key", async () => {
    await drainAll(queue);
    const key = freshKey("order");
    const holder = await queue.submit({ strategyId: "order", concurrencyKey: key });
    const [running] = await queue.claim("w1", 1);
    expect(running?.id).toBe(holder.build.id);
    const priorities = [0, 5, 0, 5, -3, 5, 0];
    const waiting = await queue.submitMany(
      priorities.map((priority) => ({ strategyId: "order", concurrencyKey: key, priority })),
    );
    const expected = waiting
      .map((w) => w.build)
      .sort((x, y) => y.priority - x.priority || x.seq - y.seq)
      .map((x) => x.id);
    const order: string[] = [];
    let current = running as ClaimedBuild;
    for (;;) {
      await queue.complete(current.id, current.lease);
      const claimed = await queue.claim("w1", 5);
      if (claimed.length === 0) break;
      expect(claimed).toHaveLength(1); // never two of the key at once
      current = claimed[0] as ClaimedBuild;
      order.push(current.id);
    }
    expect(order).toEqual(expected);
  });

  it("gives a free slot back to a build that comes first in order, until the slot's build was claimed", async () => {
    await drainAll(queue);
    const key = freshKey("displace");
    const low = await queue.submit({ strategyId: "displace", concurrencyKey: key, priority: 0 });
    expect(low.build.held).toBe(false); // the key's slot was free
    const high = await queue.submit({ strategyId: "displace", concurrencyKey: key, priority: 9 });
    expect(high.build.held).toBe(false);
    expect((await queue.get(low.build.id)).held).toBe(true);
    expect(await queue.limit(key)).toMatchObject({ running: 0, admitted: 1, waiting: 1 });
    const [first] = await queue.claim("w1", 10);
    expect(first?.id).toBe(high.build.id);
    // A claimed build keeps its slot: a later, higher build of the key waits behind it.
    const higher = await queue.submit({ strategyId: "displace", concurrencyKey: key, priority: 20 });
    expect(higher.build.held).toBe(true);
    expect(await queue.claim("w1", 10)).toEqual([]);
    await queue.complete(first?.id ?? "", first?.lease ?? 0);
    const order: string[] = [];
    for (;;) {
      const [next] = await queue.claim("w1", 10);
      if (!next) break;
      order.push(next.id);
      await queue.complete(next.id, next.lease);
    }
    expect(order).toEqual([higher.build.id, low.build.id]);
  });

  it("runs up to the limit at once; raising it admits waiting builds at once, lowering holds back", async () => {
    await drainAll(queue);
    const key = freshKey("two");
    expect(await queue.setLimit(key, 2)).toMatchObject({ key, limit: 2, running: 0 });
    const submitted = await queue.submitMany(
      Array.from({ length: 6 }, () => ({ strategyId: "two", concurrencyKey: key })),
    );
    const ids = submitted.map((s) => s.build.id);
    const first = await queue.claim("w1", 10);
    expect(first.map((x) => x.id)).toEqual(ids.slice(0, 2));
    // A claimer waiting for work wakes when the limit is raised.
    const woke = queue.waitForWork(30_000);
    const raised = await queue.setLimit(key, 4);
    expect(raised).toMatchObject({ limit: 4, running: 2, admitted: 2, waiting: 2 });
    await woke;
    const more = await queue.claim("w1", 10);
    expect(more.map((x) => x.id)).toEqual(ids.slice(2, 4));
    // Lowered below what runs: nothing more starts until the key drains under the new limit.
    const lowered = await queue.setLimit(key, 1);
    expect(lowered).toMatchObject({ limit: 1, running: 4, admitted: 0, waiting: 2 });
    const all = [...first, ...more];
    for (const build of all.slice(0, 3)) {
      await queue.complete(build.id, build.lease);
      expect(await queue.claim("w1", 10)).toEqual([]);
    }
    await queue.complete(all[3]?.id ?? "", all[3]?.lease ?? 0);
    const fifth = await queue.claim("w1", 10);
    expect(fifth.map((x) => x.id)).toEqual([ids[4]]);
    // Lowering with admitted builds not yet started holds them back (and out of the index).
    await queue.setLimit(key, 3);
    expect(await queue.limit(key)).toMatchObject({ running: 1, admitted: 1, waiting: 0 });
    await queue.setLimit(key, 1);
    expect(await queue.limit(key)).toMatchObject({ running: 1, admitted: 0, waiting: 1 });
    expect(await queue.claim("w1", 10)).toEqual([]);
    await queue.complete(fifth[0]?.id ?? "", fifth[0]?.lease ?? 0);
    const sixth = await queue.claim("w1", 10);
    expect(sixth.map((x) => x.id)).toEqual([ids[5]]);
    await queue.complete(sixth[0]?.id ?? "", sixth[0]?.lease ?? 0);
    expect(await maxRunningFromEvents(queue, new Set(ids))).toBe(4);
  });

  it("never lets competing claimers exceed a key's limit (checked on the record)", async () => {
    await drainAll(queue);
    const keys = [freshKey("race-a"), freshKey("race-b")];
    await queue.setLimit(keys[1] as string, 2);
    const limits = new Map([
      [keys[0], 1],
      [keys[1], 2],
    ]);
    const builds: Build[] = [];
    for (let i = 0; i < 3; i++) {
      const batch = await queue.submitMany(
        Array.from({ length: 10 }, (_, j) => ({
          strategyId: `race-${j % 3}`,
          concurrencyKey: keys[(i + j) % 2],
          priority: j % 3,
        })),
      );
      builds.push(...batch.map((b) => b.build));
    }
    const unkeyed = await queue.submitMany(Array.from({ length: 10 }, () => ({ strategyId: "race-free" })));
    const done = new Set<string>();
    const claimer = async (name: string) => {
      let idle = 0;
      while (idle < 20) {
        const claimed = await queue.claim(name, 3);
        if (claimed.length === 0) {
          idle += 1;
          await queue.waitForWork(50);
          continue;
        }
        idle = 0;
        await Promise.all(
          claimed.map(async (b) => {
            await new Promise((r) => setTimeout(r, 5 + Math.random() * 20));
            // Some fail once and come back (their slot stays theirs while they wait out the backoff).
            if (b.retryCount === 0 && b.seq % 4 === 0) await queue.fail(b.id, b.lease, "flaky");
            else {
              await queue.complete(b.id, b.lease);
              done.add(b.id);
            }
          }),
        );
      }
    };
    await Promise.all(["c1", "c2", "c3", "c4"].map(claimer));
    // The record decides: a build's claim is written after the end of the run whose slot it took
    // (the end commits, then the admission, then the claim), so replaying the events in id order
    // counts exactly what ran at once. (A count kept here would see the next claim return before
    // the completion's promise, which resolves after the admission it triggers.)
    for (const b of [...builds, ...unkeyed.map((u) => u.build)]) expect(done.has(b.id)).toBe(true);
    for (const key of keys) {
      const ids = new Set(builds.filter((b) => b.concurrencyKey === key).map((b) => b.id));
      const max = await maxRunningFromEvents(queue, ids);
      expect(max).toBeGreaterThanOrEqual(1);
      expect(max).toBeLessThanOrEqual(limits.get(key) ?? 1);
    }
  }, 60_000);

  it("admits no more than the limit when many admissions of one key run at once", async () => {
    await drainAll(queue);
    const key = freshKey("crowd");
    await queue.setLimit(key, 2);
    const holders = await queue.submitMany([
      { strategyId: "crowd", concurrencyKey: key },
      { strategyId: "crowd", concurrencyKey: key },
    ]);
    const running = await queue.claim("w1", 10);
    expect(running.map((b) => b.id)).toEqual(holders.map((h) => h.build.id));
    await queue.submitMany(Array.from({ length: 30 }, () => ({ strategyId: "crowd", concurrencyKey: key })));
    // Both slots free at once (the admissions after these results run concurrently with the sweeps).
    await queue.store.db.query("UPDATE builds SET status = 'completed' WHERE id = ANY ($1::uuid[])", [
      running.map((b) => b.id),
    ]);
    await Promise.all(Array.from({ length: 12 }, () => queue.admitWaiting()));
    expect(await queue.limit(key)).toMatchObject({ running: 0, admitted: 2, waiting: 28 });
    const admitted = await queue.claim("w1", 10);
    expect(admitted).toHaveLength(2);
    await Promise.all(admitted.map((b) => queue.complete(b.id, b.lease)));
    await drainAll(queue);
    expect(await queue.limit(key)).toMatchObject({ running: 0, admitted: 0, waiting: 0 });
  });

  it("supersede stops the still-queued builds of the strategy, leaves running ones, and frees their slots", async () => {
    await drainAll(queue);
    const strategy = freshKey("latest");
    const key = freshKey("latest-key");
    const s1 = await queue.submit({ strategyId: strategy, concurrencyKey: key });
    const [running] = await queue.claim("w1", 1);
    expect(running?.id).toBe(s1.build.id);
    const s2 = await queue.submit({ strategyId: strategy, concurrencyKey: key });
    const s3 = await queue.submit({ strategyId: strategy });
    const bystander = await queue.submit({ strategyId: `${strategy}-other` });
    const s4 = await queue.submit({ strategyId: strategy, concurrencyKey: key, supersede: true });
    expect(s4.created).toBe(true);
    expect(new Set(s4.superseded)).toEqual(new Set([s2.build.id, s3.build.id]));
    for (const old of [s2, s3]) {
      const build = await queue.get(old.build.id);
      expect(build).toMatchObject({ status: "stopped", stopReason: `superseded by ${s4.build.id}` });
      const events = await queue.store.db.query<{ type: string; data: { supersededBy: string } }>(
        "SELECT type, data FROM build_events WHERE build_id = $1 ORDER BY id DESC LIMIT 1",
        [old.build.id],
      );
      expect(events.rows[0]).toEqual({ type: "superseded", data: { supersededBy: s4.build.id } });
    }
    expect((await queue.get(s1.build.id)).status).toBe("running");
    // s4 waits on the key (s1 runs); the bystander of another strategy is claimable.
    expect((await queue.claim("w1", 10)).map((b) => b.id)).toEqual([bystander.build.id]);
    await queue.complete(running?.id ?? "", running?.lease ?? 0);
    const next = await queue.claim("w1", 10);
    expect(next.map((b) => b.id)).toEqual([s4.build.id]);
    await queue.complete(next[0]?.id ?? "", next[0]?.lease ?? 0);
    // Within one batch the newest of a strategy wins too.
    const batch = await queue.submitMany([
      { strategyId: strategy, supersede: true },
      { strategyId: strategy, supersede: true },
    ]);
    expect((await queue.get(batch[0]?.build.id ?? "")).status).toBe("stopped");
    expect(batch[1]?.superseded).toEqual([batch[0]?.build.id]);
    await drainAll(queue);
  });

  it("supersedes and admits concurrently on one key without a deadlock or a lost slot", async () => {
    await drainAll(queue);
    const key = freshKey("churn");
    const strategy = freshKey("churn-strategy");
    await queue.setLimit(key, 2);
    const errors: unknown[] = [];
    const submitter = async () => {
      for (let i = 0; i < 15; i++) {
        await queue
          .submit({ strategyId: strategy, concurrencyKey: key, supersede: i % 2 === 0 })
          .catch((err: unknown) => errors.push(err));
      }
    };
    const runner = async () => {
      for (let idle = 0; idle < 20; ) {
        const claimed = await queue.claim("churner", 2);
        if (claimed.length === 0) {
          idle += 1;
          await queue.waitForWork(20);
          continue;
        }
        idle = 0;
        await Promise.all(claimed.map((b) => queue.complete(b.id, b.lease).catch((err) => errors.push(err))));
      }
    };
    await Promise.all([submitter(), submitter(), runner(), runner()]);
    expect(errors).toEqual([]);
    await drainAll(queue);
    expect(await queue.limit(key)).toMatchObject({ running: 0, admitted: 0, waiting: 0 });
    const ids = (await queue.list({ strategyId: strategy, limit: 100 })).builds.map((b) => b.id);
    expect(await maxRunningFromEvents(queue, new Set(ids))).toBeLessThanOrEqual(2);
  }, 60_000);

  it("admits a keyed build with a future runAt when it is due, and an operator's retry waits its turn", async () => {
    await drainAll(queue);
    const key = freshKey("later");
    const later = await queue.submit({
      strategyId: "later",
      concurrencyKey: key,
      runAt: new Date(Date.now() + 1000).toISOString(),
    });
    expect(later.build.held).toBe(true);
    expect(await queue.claim("w1", 10)).toEqual([]);
    const claimed = await eventually(async () => {
      await queue.admitWaiting();
      const got = await queue.claim("w1", 10);
      return got.length > 0 ? got : undefined;
    });
    expect(claimed.map((b) => b.id)).toEqual([later.build.id]);
    const other = await queue.submit({ strategyId: "later", concurrencyKey: key });
    await queue.fail(later.build.id, claimed[0]?.lease ?? 0, "no", { retryable: false });
    const [second] = await queue.claim("w1", 10);
    expect(second?.id).toBe(other.build.id);
    const retried = await queue.retry(later.build.id);
    expect(retried).toMatchObject({ status: "queued", held: true });
    expect(await queue.claim("w1", 10)).toEqual([]);
    await queue.complete(second?.id ?? "", second?.lease ?? 0);
    expect((await queue.claim("w1", 10)).map((b) => b.id)).toEqual([later.build.id]);
    await drainAll(queue);
  });

  it("keeps held builds out of the index across a reconcile", async () => {
    await drainAll(queue);
    if (!queue.hasRedis) return; // the index exists only with Redis
    const key = freshKey("reconcile");
    const builds = await queue.submitMany(
      Array.from({ length: 3 }, () => ({ strategyId: "rec", concurrencyKey: key })),
    );
    await queue.reconcile();
    const claimed = await queue.claim("w1", 10);
    expect(claimed.map((b) => b.id)).toEqual([builds[0]?.build.id]);
    expect(await queue.counts()).toEqual({ ready: 0, delayed: 0 });
    expect(await queue.countWaitingOnLimit()).toBe(2);
    await drainAll(queue);
    await queue.complete(claimed[0]?.id ?? "", claimed[0]?.lease ?? 0);
    await drainAll(queue);
    expect(await queue.countWaitingOnLimit()).toBe(0);
  });

  it("refuses bad keys and limits naming the field, and changes nothing", async () => {
    const bad: [() => Promise<unknown>, string][] = [
      [() => queue.submit({ strategyId: "bad", concurrencyKey: "" }), "concurrencyKey"],
      [() => queue.submit({ strategyId: "bad", concurrencyKey: "a\u0007b" }), "concurrencyKey"],
      [() => queue.submit({ strategyId: "bad", concurrencyKey: "x".repeat(201) }), "concurrencyKey"],
      [() => queue.submit({ strategyId: "bad", concurrencyKey: 5 } as never), "concurrencyKey"],
      [() => queue.submit({ strategyId: "bad", supersede: "yes" } as never), "supersede"],
      [() => queue.setLimit("k", 0), "limit"],
      [() => queue.setLimit("k", 1.5), "limit"],
      [() => queue.setLimit("k", -1), "limit"],
      [() => queue.setLimit("k\n", 1), "key"],
      [() => queue.setLimit("", 1), "key"],
      [() => queue.limit("k".repeat(201)), "key"],
    ];
    const before = await queue.statusCounts();
    for (const [call, field] of bad) {
      const err = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).field).toBe(field);
    }
    expect(await queue.statusCounts()).toEqual(before);
    expect((await queue.limits()).some((l) => l.key === "k")).toBe(false);
  });
});
