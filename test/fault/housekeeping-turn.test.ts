/**
 * The fleet makes one housekeeping pass (reaper, admission sweep) per interval: the process that
 * takes the turn in Redis makes it. A holder killed right after taking the turn (kill -9: it never
 * makes its pass) delays the reaper only until the turn expires; then another process takes it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

let server: RedisServer;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  server = await RedisServer.start({ appendonly: false });
});
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await server?.destroy();
});

describe("the housekeeping turn", () => {
  it("holds every reaper off while taken, and a dead holder's turn passes to another process", async () => {
    const { queue, prefix, cleanup } = await openTestQueue("housekeeping_turn", {
      redisUrl: server.url,
      reconcileIntervalMs: 3_600_000,
    });
    cleanups.push(cleanup);
    const client = server.client();
    cleanups.push(async () => client.disconnect());
    const gate = `${prefix}:housekeeping_gate`;
    queue.startReaper(100);
    const { build } = await queue.submit({ strategyId: "turn" });

    // Another process took the turn and was killed before its pass: its gate stays for 4 s. Set
    // before the build is even claimed, so no pass that started earlier can reap it.
    await client.set(gate, "dead-holder", "PX", 4000);
    const [claimed] = await queue.claim("vanished-worker", 1, { leaseMs: 300 });
    expect(claimed?.id).toBe(build.id);

    // While the dead holder's turn lasts, nobody reaps the expired lease. (Read the build first: the
    // dead holder's value still there afterwards means its turn was held, unbroken, when it was read;
    // once it expires this process sets a turn of its own.)
    let heldChecks = 0;
    for (;;) {
      const status = (await queue.get(build.id)).status;
      if ((await client.get(gate)) !== "dead-holder") break;
      expect(status).toBe("running");
      heldChecks += 1;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(heldChecks).toBeGreaterThan(0);

    // Then this process takes the turn and reaps the build, once.
    const requeued = await eventually(async () => {
      const b = await queue.get(build.id);
      return b.status === "queued" && b;
    });
    expect(requeued).toMatchObject({ retryCount: 1, lease: (claimed?.lease ?? 0) + 1 });
    expect(await client.get(gate)).not.toBe("dead-holder");
  });
});
