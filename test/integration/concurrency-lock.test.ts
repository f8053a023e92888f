/**
 * An admission takes its key's lock before it counts (migration 0011): here another transaction holds
 * the key's row locked while it admits a build itself. The queue's admission must wait for it, then
 * count that build: the key's one slot is taken, so nothing more is admitted. (Counting without the
 * lock would see the slot free and admit a second build: two of a limit-1 key claimable at once.)
 */
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import { TEST_DATABASE_URL } from "../helpers/postgres.js";
import { openTestQueue } from "../helpers/queue.js";

describe("admission and the key's lock", () => {
  let queue: BuildQueue;
  let cleanup: () => Promise<void>;
  let client: pg.Client;

  beforeAll(async () => {
    let schema: string;
    ({ queue, cleanup, schema } = await openTestQueue("concurrency_lock"));
    client = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });
    await client.connect();
  });
  afterAll(async () => {
    await client?.end();
    await cleanup?.();
  });

  it("waits for a concurrent admission of the key, then sees the slot it took", async () => {
    const [running, first, second] = await queue.submitMany([
      { strategyId: "lock", concurrencyKey: "locked" },
      { strategyId: "lock", concurrencyKey: "locked" },
      { strategyId: "lock", concurrencyKey: "locked" },
    ]);
    const [claimed] = await queue.claim("w1", 1);
    expect(claimed?.id).toBe(running?.build.id);
    // The running build ends behind the queue's back: one slot free, nobody admitted yet.
    await client.query("UPDATE builds SET status = 'completed' WHERE id = $1", [claimed?.id]);

    await client.query("BEGIN");
    await client.query("SELECT key FROM concurrency_limits WHERE key = 'locked' FOR UPDATE");
    await client.query("UPDATE builds SET held = false WHERE id = $1", [first?.build.id]);
    let settled = false;
    const admission = queue.admitWaiting().finally(() => {
      settled = true;
    });
    await sleep(500);
    expect(settled).toBe(false); // it waits for the key's lock
    await client.query("COMMIT");
    expect(await admission).toBe(0);
    expect((await queue.get(second?.build.id ?? "")).held).toBe(true);
    expect(await queue.limit("locked")).toMatchObject({ running: 0, admitted: 1, waiting: 1 });
  });
});
