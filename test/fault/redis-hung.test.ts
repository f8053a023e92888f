/**
 * A hung Redis (issue 16): `DEBUG SLEEP 5`, again and again, under `oculus up --workers 0` and an
 * `oculus worker`, with builds submitted over HTTP one after another. The first request that meets
 * the hung server waits for the command timeout (2 s) and switches its process to PostgreSQL; after
 * that no request waits on Redis: the way back is probed off the request path (PING + a write, with a
 * short timeout). So per fault at most one submit waits about a command timeout, none waits for the
 * whole sleep, and builds keep running.
 */
import { afterAll, describe, expect, it } from "vitest";
import { type OculusFleet, startOculusFleet } from "../helpers/oculus-fleet.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

const FAULTS = 3;
const SLEEP_S = 5;
/** A submit this slow waited on Redis's command timeout (2 s); a normal one takes milliseconds. */
const WAITED_ON_REDIS_MS = 1500;

describe("a hung Redis (DEBUG SLEEP)", () => {
  it("makes at most one submit per fault wait about a command timeout, and builds keep running", async () => {
    const server = await RedisServer.start({
      appendonly: false,
      extraArgs: ["--enable-debug-command", "yes"],
    });
    cleanups.push(() => server.destroy());
    const fleet = await startOculusFleet("redis_hung", server.url, 1);
    cleanups.push(() => fleet.stop());
    await eventually(async () => fleet.logged("fast path resumed").every((n) => n >= 1), 60_000);

    const submitted: string[] = [];
    const report: string[] = [];
    let maxMs = 0;
    for (let fault = 1; fault <= FAULTS; fault++) {
      await eventually(async () => (await fleet.mode()) === "redis", 60_000);
      const sleeper = server.client();
      const sleeping = sleeper.call("DEBUG", "SLEEP", String(SLEEP_S)).finally(() => sleeper.disconnect());
      const until = Date.now() + (SLEEP_S + 2) * 1000;
      const latencies: number[] = [];
      while (Date.now() < until) {
        const { id, ms } = await fleet.submit(`hung${fault}`);
        submitted.push(id);
        latencies.push(ms);
        // A submit every ~150 ms: enough to meet every moment of the fault, few enough that the one
        // worker (2 slots, ~1 s a build with its throttled progress) drains them in a minute or two.
        await new Promise((r) => setTimeout(r, 150));
      }
      await sleeping;
      const slow = latencies.filter((ms) => ms >= WAITED_ON_REDIS_MS);
      const worst = Math.max(...latencies);
      maxMs = Math.max(maxMs, worst);
      report.push(
        `fault ${fault}: ${latencies.length} submits, max ${worst.toFixed(0)} ms, slow: ${slow.map((ms) => ms.toFixed(0)).join(", ")}`,
      );
      expect(slow.length, report.join("\n")).toBeLessThanOrEqual(1);
    }
    console.log(
      `DEBUG SLEEP ${SLEEP_S} x ${FAULTS}: max submit latency ${maxMs.toFixed(0)} ms\n${report.join("\n")}`,
    );
    expect(maxMs).toBeLessThan(SLEEP_S * 1000);

    await drained(fleet).catch(async (err: Error) => {
      throw new Error(`${err.message}\n${await fleet.describe()}`);
    });
    expect(submitted.length).toBeGreaterThan(0);
  }, 400_000);
});

/**
 * Waits until every build has finished, failing only when the fleet stops making progress (no build
 * finished for 30 s): how long draining takes depends on the machine's load, a stall does not.
 */
async function drained(fleet: OculusFleet): Promise<void> {
  const STALL_MS = 30_000;
  let left = await fleet.unfinished();
  let progressedAt = Date.now();
  while (left > 0) {
    if (Date.now() - progressedAt > STALL_MS) {
      throw new Error(`no build finished for ${STALL_MS / 1000} s; ${left} unfinished`);
    }
    await new Promise((r) => setTimeout(r, 1000));
    const now = await fleet.unfinished();
    if (now < left) progressedAt = Date.now();
    left = now;
  }
}
