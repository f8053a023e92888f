/**
 * A queue's pub/sub connections (wake-ups, the event stream, stop signals) whose SUBSCRIBE is cut
 * between request and reply, right after a reconnection: as when Redis is killed while clients come
 * back. ioredis 5's own re-subscription left that failure unhandled and the process died of it (an
 * exactly-once CI run lost a claimer process so). The promise: no unhandled rejection, the
 * connections subscribe again on their next reconnection, and the queue goes on in Redis mode.
 */
import { afterAll, describe, expect, it } from "vitest";
import { eventually, openTestQueue } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

describe("pub/sub connections whose SUBSCRIBE is cut after a reconnection", () => {
  it("subscribe again on the next one; nothing is left unhandled; the queue goes on", async () => {
    const unhandled: unknown[] = [];
    const record = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", record);
    cleanups.push(async () => process.off("unhandledRejection", record));

    const server = await RedisServer.start({ appendonly: false });
    cleanups.push(() => server.destroy());
    const proxy = await TcpProxy.start(server.port);
    cleanups.push(() => proxy.close());
    const { queue, cleanup } = await openTestQueue("resubscribe", {
      redisUrl: `redis://127.0.0.1:${proxy.port}`,
    });
    cleanups.push(cleanup);
    expect(queue.mode).toBe("redis");
    // The subscribers are connected and subscribed (PUBSUB NUMSUB counts them on the server): the
    // wake-ups' at least (the event stream's and the stop signals' start with their first listener).
    const subscribers = async () => {
      const client = server.client();
      try {
        const channels = (await client.call("PUBSUB", "CHANNELS")) as string[];
        if (channels.length === 0) return 0;
        const counts = (await client.call("PUBSUB", "NUMSUB", ...channels)) as (string | number)[];
        return counts.filter((_, i) => i % 2 === 1).reduce<number>((sum, n) => sum + Number(n), 0);
      } finally {
        client.disconnect();
      }
    };
    const initial = await eventually(async () => subscribers(), 20_000);

    // Every connection drops; on the way back each SUBSCRIBE is cut before it reaches Redis.
    proxy.cutOnClientData(/subscribe/i, initial);
    proxy.cut();
    proxy.restore();
    await eventually(async () => proxy.dataCutsLeft === 0, 30_000);
    // The next reconnection subscribes them again.
    await eventually(async () => (await subscribers()) === initial, 30_000);

    await eventually(async () => queue.mode === "redis", 30_000);
    const { build } = await queue.submit({ strategyId: "after-resubscribe" });
    const claimed = await eventually(async () => {
      const got = await queue.claim("w-resubscribe", 1);
      return got.length > 0 ? got : undefined;
    }, 20_000);
    expect(claimed?.[0]?.id).toBe(build.id);
    expect(unhandled.map(String)).toEqual([]);
  });
});
