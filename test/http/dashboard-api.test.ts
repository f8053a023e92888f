/**
 * The API behind the dashboard's lists and charts: GET /v1/builds?order=finished (finish order, one
 * entry per build, status and strategy filters, a bounded walk per page that still reaches an old
 * finish through its cursors, refusals naming the field), on PostgreSQL and on the embedded store;
 * and GET /v1/stats/history (validation; without sampling, `since` null and no minutes; the mode).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildQueue } from "../../src/index.js";
import { FINISHED_WALK_EVENTS } from "../../src/postgres/finished-store.js";
import { openTestApi, type TestApi } from "../helpers/api.js";

/** Claims the next build and completes (or fails) it; returns its id. */
async function finishNext(queue: BuildQueue, outcome: "complete" | "fail"): Promise<string> {
  const [claimed] = await queue.claim("finisher", 1);
  if (!claimed) throw new Error("nothing to claim");
  if (outcome === "complete") await queue.complete(claimed.id, claimed.lease, { ok: true });
  else await queue.fail(claimed.id, claimed.lease, "boom", { retryable: false });
  return claimed.id;
}

describe("GET /v1/builds?order=finished", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await openTestApi("dash_api_finished");
  });
  afterAll(() => api?.cleanup());

  const ids = async (query: string) => {
    const res = await api.inject("GET", `/v1/builds?order=finished&${query}`);
    expect(res.status, res.text).toBe(200);
    return {
      ids: res.json.builds.map((b: { id: string }) => b.id),
      next: res.json.nextCursor as string | null,
    };
  };

  it("lists finished builds latest finish first, once each, with filters; running and queued ones never", async () => {
    const finished: string[] = [];
    const odd = new Set<string>();
    for (let i = 0; i < 6; i++) {
      await api.queue.submit({ strategyId: i % 2 ? "odd" : "even", maxRetries: 0 });
      const id = await finishNext(api.queue, i === 2 ? "fail" : "complete");
      finished.unshift(id);
      if (i % 2) odd.add(id);
    }
    const leftOver = [
      (await api.queue.submit({ strategyId: "even" })).build.id,
      (await api.queue.submit({ strategyId: "even" })).build.id,
    ];
    await api.queue.claim("finisher", 1); // running
    expect((await ids("limit=100")).ids).toEqual(finished);
    // The failed one, retried and completed, moves to the front, listed once.
    const failed = finished[3] as string;
    await api.queue.retry(failed);
    const [again] = await api.queue.claim("finisher", 1);
    if (again?.id !== failed) throw new Error("the retried build was not claimed first");
    await api.queue.complete(again.id, again.lease, {});
    const now = [failed, ...finished.filter((id) => id !== failed)];
    expect((await ids("limit=100")).ids).toEqual(now);
    expect((await ids("status=failed")).ids).toEqual([]);
    expect((await ids("status=completed")).ids).toEqual(now);
    expect((await ids("strategyId=odd")).ids).toEqual(now.filter((id) => odd.has(id)));
    expect((await ids("strategyId=even&status=completed")).ids).toEqual(now.filter((id) => !odd.has(id)));
    // Pages of 2 follow each other without gaps or repeats.
    const pages: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { ids: string[]; next: string | null } = await ids(
        `limit=2${cursor ? `&cursor=${cursor}` : ""}`,
      );
      pages.push(...page.ids);
      cursor = page.next;
    } while (cursor);
    expect(pages).toEqual(now);
    // The next test claims its own builds.
    for (const id of leftOver) await api.queue.stop(id, { actor: "test" });
  });

  it("a page walks a bounded number of events: an old finish of a rare strategy is reached through cursors", async () => {
    await api.queue.submit({ strategyId: "rare" });
    const rare = await finishNext(api.queue, "complete");
    // More events than one page looks at, after the rare finish (each submit is one event).
    await api.queue.submitMany(Array.from({ length: FINISHED_WALK_EVENTS }, () => ({ strategyId: "bulk" })));
    const first = await ids("strategyId=rare");
    expect(first.ids).toEqual([]);
    expect(first.next).not.toBeNull();
    const second = await ids(`strategyId=rare&cursor=${first.next}`);
    expect(second.ids).toEqual([rare]);
    // The walk reaches the first event: no further page.
    let next = second.next;
    while (next) next = (await ids(`strategyId=rare&cursor=${next}`)).next;
  }, 60_000);

  it("refuses bad input naming the field", async () => {
    for (const [query, field] of [
      ["order=finished&status=queued", "status"],
      ["order=finished&status=running", "status"],
      ["order=sideways", "order"],
      ["order=finished&cursor=bm9wZQ", "cursor"],
      // A cursor of the other order.
      [`order=finished&cursor=${Buffer.from("seq:5").toString("base64url")}`, "cursor"],
      [`cursor=${Buffer.from("fin:5").toString("base64url")}`, "cursor"],
      ["order=finished&limit=0", "limit"],
    ] as const) {
      const res = await api.inject("GET", `/v1/builds?${query}`);
      expect(res.status, query).toBe(400);
      expect(res.json.error.field, query).toBe(field);
    }
  });
});

describe("finish order on the embedded store (PGlite)", () => {
  let dir: string;
  let queue: BuildQueue;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "oculus-finished-"));
    queue = await BuildQueue.open({ dataDir: dir });
  });
  afterAll(async () => {
    await queue?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("lists the same way", async () => {
    const order: string[] = [];
    for (let i = 0; i < 3; i++) {
      await queue.submit({ strategyId: "embedded", maxRetries: 0 });
      order.unshift(await finishNext(queue, i === 1 ? "fail" : "complete"));
    }
    const page = await queue.list({ order: "finished", limit: 2 });
    expect(page.builds.map((b) => b.id)).toEqual(order.slice(0, 2));
    const rest = await queue.list({ order: "finished", limit: 2, cursor: page.nextCursor ?? undefined });
    expect(rest.builds.map((b) => b.id)).toEqual(order.slice(2));
    expect((await queue.list({ order: "finished", status: "failed" })).builds.map((b) => b.id)).toEqual([
      order[1],
    ]);
  });
});

describe("GET /v1/stats/history", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await openTestApi("dash_api_stats");
  });
  afterAll(() => api?.cleanup());

  it("without sampling: since null, no minutes, the mode and its history", async () => {
    const res = await api.inject("GET", "/v1/stats/history");
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ since: null, sampleMs: null, minutes: [], mode: "postgres" });
    expect(res.json.modes).toEqual([expect.objectContaining({ mode: "postgres", reason: "at start" })]);
  });

  it("refuses a bad minutes naming the field", async () => {
    for (const minutes of ["0", "61", "1e1", "-5", "x"]) {
      const res = await api.inject("GET", `/v1/stats/history?minutes=${minutes}`);
      expect(res.status, minutes).toBe(400);
      expect(res.json.error.field, minutes).toBe("minutes");
    }
    expect((await api.inject("GET", "/v1/stats/history?hours=1")).status).toBe(400);
  });
});
