/**
 * The event cursor's gap rule, interleaving by interleaving, with a scripted list of writers (what
 * `event_writers.sql` would list at each probe) and a clock of our own. The same interleavings run
 * against PostgreSQL in test/integration/event-gaps.test.ts.
 */
import { describe, expect, it, vi } from "vitest";
import type { Logger } from "../../src/core/logger.js";
import type { EventWriter } from "../../src/postgres/event-store.js";
import { DEFAULT_GAP_RULE, EventCursor, type PageVerdict } from "../../src/queue/event-gaps.js";

const writer = (vxid: string): EventWriter => ({ vxid, pid: 1 });

/** A cursor whose probe answers with `writers` as it stands at each call. */
function setup(start = 0) {
  const state = { now: 1_000, writers: [] as EventWriter[], probes: 0 };
  const warn = vi.fn();
  const logger = { warn } as unknown as Logger;
  const cursor = new EventCursor(
    async () => {
      state.probes += 1;
      return [...state.writers];
    },
    logger,
    DEFAULT_GAP_RULE,
    () => state.now,
  );
  cursor.jumpTo(start);
  /** One read of the reader: begin, then take what the table holds above the position. */
  const read = (table: number[], full = false): Promise<PageVerdict> => {
    const after = cursor.beginRead();
    return cursor.take(
      table.filter((id) => id > after),
      full,
    );
  };
  return { state, cursor, read, warn };
}

describe("event cursor: the gap rule", () => {
  it("accepts consecutive ids without probing", async () => {
    const { cursor, read, state } = setup();
    expect(await read([1, 2, 3])).toEqual({ accepted: 3, next: { kind: "caught-up" } });
    expect(await read([4, 5], true)).toEqual({ accepted: 2, next: { kind: "next-page" } });
    expect(cursor.position).toBe(5);
    expect(state.probes).toBe(0);
  });

  it("a rolled-back insert (no writer left): stepped over by the next read, after one probe", async () => {
    const { cursor, read, state } = setup();
    expect(await read([1, 2, 4])).toEqual({ accepted: 2, next: { kind: "read-again" } });
    expect(state.probes).toBe(1);
    // The read that found the gap began before the probe: it may not step over it.
    expect(await cursor.take([4], false)).toEqual({ accepted: 0, next: { kind: "read-again" } });
    expect(await read([1, 2, 4])).toEqual({ accepted: 1, next: { kind: "caught-up" } });
    expect(cursor.position).toBe(4);
    expect(state.probes).toBe(1);
  });

  it("a sequence jump (ids 3 to 34 never drawn by an insert) costs one probe", async () => {
    const { cursor, read, state } = setup();
    await read([1, 2, 35]);
    expect(await read([35, 36])).toEqual({ accepted: 2, next: { kind: "caught-up" } });
    expect(cursor.position).toBe(36);
    expect(state.probes).toBe(1);
  });

  it("a writer that holds its transaction open across the first sight is waited for, then delivered in order", async () => {
    const { cursor, read, state } = setup(2);
    state.writers = [writer("3/7")];
    expect(await read([4])).toEqual({ accepted: 0, next: { kind: "read-again" } });
    expect(await read([4])).toEqual({ accepted: 0, next: { kind: "wait", ms: 5 } });
    state.now += 5;
    expect(await read([4])).toEqual({ accepted: 0, next: { kind: "wait", ms: 10 } });
    state.now += 10;
    expect(await read([4])).toEqual({ accepted: 0, next: { kind: "wait", ms: 20 } });
    // It commits event 3 (its lock goes after its commit is visible).
    state.writers = [];
    expect(await read([3, 4])).toEqual({ accepted: 2, next: { kind: "caught-up" } });
    expect(cursor.position).toBe(4);
  });

  it("rechecks with backoff: 5 ms doubling up to 100 ms, one probe each", async () => {
    const { read, state } = setup(2);
    state.writers = [writer("3/7")];
    await read([4]);
    const waits: number[] = [];
    for (let i = 0; i < 8; i++) {
      const verdict = await read([4]);
      if (verdict.next.kind !== "wait") throw new Error(`expected a wait, got ${verdict.next.kind}`);
      waits.push(verdict.next.ms);
      state.now += verdict.next.ms;
    }
    expect(waits).toEqual([5, 10, 20, 40, 80, 100, 100, 100]);
    expect(state.probes).toBe(8); // first sight + 7 rechecks (the first wait is before any recheck)
  });

  it("a wake-up before the recheck is due reads but does not probe", async () => {
    const { read, state } = setup(2);
    state.writers = [writer("3/7")];
    await read([4]);
    await read([4]);
    state.now += 2;
    expect(await read([4])).toEqual({ accepted: 0, next: { kind: "wait", ms: 3 } });
    expect(state.probes).toBe(1);
  });

  it("writers that start after the first sight do not hold the gap (an idle or busy cluster cannot stall it)", async () => {
    const { cursor, read, state } = setup(2);
    state.writers = [writer("3/7"), writer("4/9")];
    await read([4]);
    state.now += 5;
    state.writers = [writer("4/9"), writer("5/1"), writer("6/2")];
    expect((await read([4])).next.kind).toBe("wait");
    state.now += 10;
    // Both writers seen at first sight are gone; new ones keep coming.
    state.writers = [writer("5/1"), writer("7/3"), writer("3/8")]; // 3/8: the same backend, a new transaction
    expect(await read([4])).toEqual({ accepted: 0, next: { kind: "read-again" } });
    expect(await read([4])).toEqual({ accepted: 1, next: { kind: "caught-up" } });
    expect(cursor.position).toBe(4);
  });

  it("an event committed after more than 10 s is delivered, in order, and the wait is logged once", async () => {
    const { cursor, read, state, warn } = setup(2);
    state.writers = [writer("3/7")];
    await read([4, 5]);
    for (let waited = 0; waited < 11_000; ) {
      const verdict = await read([4, 5]);
      expect(verdict.accepted).toBe(0);
      if (verdict.next.kind !== "wait") throw new Error(`expected a wait, got ${verdict.next.kind}`);
      state.now += verdict.next.ms;
      waited += verdict.next.ms;
    }
    expect(cursor.position).toBe(2);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0]?.[0]).toMatchObject({ missing: 3, writers: [{ vxid: "3/7", pid: 1 }] });
    state.writers = [];
    expect(await read([3, 4, 5])).toEqual({ accepted: 3, next: { kind: "caught-up" } });
  });

  it("one probe covers every missing id below the highest id read before it", async () => {
    const { cursor, read, state } = setup();
    const odd = Array.from({ length: 200 }, (_, i) => 2 * i + 1); // 1, 3, ..., 399: pruned evens
    await read(odd);
    expect(await read(odd)).toEqual({ accepted: 199, next: { kind: "caught-up" } });
    expect(cursor.position).toBe(399);
    expect(state.probes).toBe(1);
  });

  it("a gap above what the probe covered gets a probe of its own", async () => {
    const { cursor, read, state } = setup();
    await read([1, 3]);
    expect(await read([1, 3])).toMatchObject({ accepted: 1 });
    // 5 was missing when 4 committed, and was drawn after the first probe: the writer holding it
    // is a new one, so that probe cannot speak for it.
    state.writers = [writer("8/1")];
    expect(await read([5])).toEqual({ accepted: 0, next: { kind: "read-again" } });
    expect(state.probes).toBe(2);
    expect(cursor.position).toBe(3);
  });

  it("jumping ahead forgets the gap", async () => {
    const { cursor, read, state } = setup();
    state.writers = [writer("3/7")];
    await read([1, 3]);
    cursor.jumpTo(10);
    expect(await read([11, 12])).toEqual({ accepted: 2, next: { kind: "caught-up" } });
    cursor.jumpTo(5); // never backwards
    expect(cursor.position).toBe(12);
  });
});
