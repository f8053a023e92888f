/**
 * A claim is a Redis pop (a proposal) followed by a PostgreSQL commit. A claimer that dies between the
 * two loses nothing: the rows are still queued, and the reconciler puts the ids back into the index.
 * A PostgreSQL claim that fails is put back at once, and builds an earlier round of the same claim
 * already took are handed to the caller, not left running with nobody working on them.
 */
import { describe, expect, it } from "vitest";
import { type Build, type BuildQueueOptions, encodeScore } from "../../src/index.js";
import { useFileFixture } from "../helpers/file-fixture.js";
import { claimedEventCount, indexDiff } from "../helpers/index-state.js";
import { sql } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";

const fixture = useFileFixture();

const byDispatch = (a: Build, b: Build) => b.priority - a.priority || a.seq - b.seq;

async function open(label: string, options: BuildQueueOptions = {}) {
  const opened = await openTestQueue(label, { redisUrl: fixture.server.url, ...options });
  fixture.defer(opened.cleanup);
  const client = fixture.server.client();
  fixture.defer(async () => client.disconnect());
  expect(opened.queue.mode).toBe("redis");
  return { ...opened, client };
}

async function submit(queue: Awaited<ReturnType<typeof open>>["queue"], priorities: number[]) {
  const results = await queue.submitMany(priorities.map((priority) => ({ strategyId: "s", priority })));
  return results.map((r) => r.build);
}

/** Claims until nothing is left, completing each; the ids in the order they were handed out. */
async function drain(queue: Awaited<ReturnType<typeof open>>["queue"]): Promise<string[]> {
  const ids: string[] = [];
  for (;;) {
    const batch = await queue.claim("drainer", 4);
    if (batch.length === 0) return ids;
    for (const b of batch) {
      ids.push(b.id);
      await queue.complete(b.id, b.lease);
    }
  }
}

describe("a claimer that dies between the Redis pop and the PostgreSQL commit", () => {
  it("loses nothing: queue.reconcile() puts the popped ids back and they are claimed", async () => {
    // No periodic check: only the on-demand reconcile repairs the index.
    const { queue, schema, prefix, client } = await open("pg_claim_crash", {
      reconcileIntervalMs: 3_600_000,
    });
    const builds = await submit(queue, [0, 2, 1, 2, 0, 1, 3, -1, 2, 0]);

    // The dying claimer: its pop happened, its claim never did.
    const popped = await client.zpopmin(`${prefix}:build_queue`, 4);
    const poppedIds = popped.filter((_, i) => i % 2 === 0);
    expect(poppedIds).toEqual(
      [...builds]
        .sort(byDispatch)
        .slice(0, 4)
        .map((b) => b.id),
    );
    const [queuedRow] = await sql<{ n: number }>(
      schema,
      "SELECT count(*)::int AS n FROM builds WHERE status = 'queued'",
    );
    expect(queuedRow?.n).toBe(10);

    // Until the reconcile, claims on the Redis path only see what is still in the index.
    const [next] = await queue.claim("w1", 1);
    expect(next?.id).toBe([...builds].sort(byDispatch)[4]?.id);
    if (!next) throw new Error("nothing claimed");
    await queue.complete(next.id, next.lease);

    const report = await queue.reconcile();
    expect(report).toMatchObject({ lostData: false, queued: 9, added: 4, removed: 0 });
    expect(await indexDiff(client, prefix, schema)).toEqual([]);

    const rest = await drain(queue);
    expect(rest).toEqual(
      [...builds]
        .sort(byDispatch)
        .map((b) => b.id)
        .filter((id) => id !== next.id),
    );
    for (const b of builds) expect(await claimedEventCount(schema, b.id)).toBe(1);
  });

  it("loses nothing without help: the periodic check sees the drift and reconciles", async () => {
    const { queue, schema, prefix, client } = await open("pg_claim_crash_periodic"); // checks every 500 ms
    const builds = await submit(queue, [1, 1, 1, 5, 5, 0]);
    const popped = await client.zpopmin(`${prefix}:build_queue`, 3);
    expect(popped.length).toBe(6);

    await eventually(async () => (await indexDiff(client, prefix, schema)).length === 0, 15_000);
    expect(await client.zcard(`${prefix}:build_queue`)).toBe(6);
    expect(await drain(queue)).toEqual([...builds].sort(byDispatch).map((b) => b.id));
    for (const b of builds) expect(await claimedEventCount(schema, b.id)).toBe(1);
  });
});

describe("a PostgreSQL claim that fails", () => {
  it("puts the proposals back, and hands out what an earlier round of the claim already took", async () => {
    const { queue, schema, prefix, client } = await open("pg_claim_fail", { reconcileIntervalMs: 3_600_000 });
    const [stale, a, b] = await submit(queue, [3, 2, 1]);
    if (!stale || !a || !b) throw new Error("submit returned too few builds");

    // `stale` is claimed, and its id reappears at the front of the index.
    const [claimedStale] = await queue.claim("w0", 1);
    expect(claimedStale?.id).toBe(stale.id);
    await client.zadd(`${prefix}:build_queue`, encodeScore(stale.priority, stale.seq), stale.id);

    // PostgreSQL refuses to claim b (an injected failure in the claiming statement).
    await sql(
      schema,
      `CREATE FUNCTION refuse_claim() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.status = 'running' AND NEW.id = '${b.id}' THEN
           RAISE EXCEPTION 'injected claim failure';
         END IF;
         RETURN NEW;
       END $$;
       CREATE TRIGGER refuse_claim BEFORE UPDATE ON builds FOR EACH ROW EXECUTE FUNCTION refuse_claim();`,
    );

    // Round 1 pops [stale, a] and takes a only; round 2 pops [b] and fails. a is this worker's: it
    // must come back to the caller rather than stay running with nobody working on it.
    const claimed = await queue.claim("w1", 2);
    expect(claimed.map((c) => c.id)).toEqual([a.id]);
    expect(await client.zscore(`${prefix}:build_queue`, b.id)).toBe(String(encodeScore(b.priority, b.seq)));

    // A claim whose only round fails reports the failure (PostgreSQL is the record), and puts b back.
    await expect(queue.claim("w2", 1)).rejects.toThrow(/injected claim failure/);
    expect(await client.zscore(`${prefix}:build_queue`, b.id)).not.toBeNull();
    const [row] = await sql<{ status: string; lease: number }>(
      schema,
      "SELECT status, lease::int AS lease FROM builds WHERE id = $1",
      [b.id],
    );
    expect(row).toEqual({ status: "queued", lease: 0 });

    await sql(schema, "DROP TRIGGER refuse_claim ON builds");
    const [claimedB] = await queue.claim("w3", 5);
    expect(claimedB).toMatchObject({ id: b.id, lease: 1, workerId: "w3" });
    for (const build of [stale, a, b]) expect(await claimedEventCount(schema, build.id)).toBe(1);
    for (const [c, lease] of [
      [claimedStale, 1],
      [claimed[0], 1],
      [claimedB, 1],
    ] as const) {
      if (!c) throw new Error("missing claim");
      expect((await queue.complete(c.id, lease)).status).toBe("completed");
    }
    expect(await queue.length()).toBe(0);
  });
});
