/**
 * The end of a run's log: close() writes every line left however slow the store answers, and gives
 * up only on a store that keeps failing (after its wait). The sink here is an in-memory stand-in for
 * BuildQueue.appendLog (whose PostgreSQL side test/integration/build-logs.test.ts covers).
 */
import { spawnSync } from "node:child_process";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import type { LogChunkInput } from "../../src/postgres/log-store.js";
import { LogShipper, type LogSink } from "../../src/worker/log-shipper.js";
import { eventually } from "../helpers/queue.js";

class SlowSink implements LogSink {
  readonly written: string[] = [];
  failing = false;
  calls = 0;
  constructor(private readonly delayMs: number) {}
  async appendLog(_id: string, _lease: number, chunks: LogChunkInput[]): Promise<void> {
    this.calls += 1;
    await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.failing) throw Object.assign(new Error("connection refused"), { code: "store_unavailable" });
    for (const c of chunks) this.written.push(c.text);
  }
}

describe("LogShipper.close", () => {
  it("waits for writes that succeed, however much longer than its wait they take", async () => {
    const sink = new SlowSink(300);
    const shipper = new LogShipper(sink, "b1", 1);
    for (let i = 1; i <= 3; i++) shipper.line(`line ${i}`, "stdout");
    // A write is in flight when close starts; more lines come after it (the run's last output).
    await new Promise((r) => setTimeout(r, 600));
    shipper.line("last line", "stdout");
    await shipper.close(50);
    expect(sink.written.join("")).toBe("line 1\nline 2\nline 3\nlast line\n");
  });

  it("gives up on a store that keeps failing once its wait is over, and writes nothing after", async () => {
    const sink = new SlowSink(10);
    sink.failing = true;
    const shipper = new LogShipper(sink, "b2", 1);
    shipper.line("never stored", "stdout");
    const started = Date.now();
    await shipper.close(300);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(sink.calls).toBeGreaterThan(1); // retried within the wait
    sink.failing = false;
    shipper.line("after close", "stdout");
    await new Promise((r) => setTimeout(r, 700));
    expect(sink.written).toEqual([]);
  });

  it("writes nothing more for a run that lost its build (wait 0)", async () => {
    const sink = new SlowSink(10);
    const shipper = new LogShipper(sink, "b3", 1);
    shipper.line("unflushed", "stdout");
    await shipper.close(0);
    await new Promise((r) => setTimeout(r, 700));
    expect(sink.written).toEqual([]);
  });
});

/** A sink whose first write waits until the test opens the gate; the later ones answer at once. */
class GatedSink implements LogSink {
  readonly written: string[] = [];
  private open: () => void = () => undefined;
  private readonly gate = new Promise<void>((resolve) => {
    this.open = resolve;
  });
  private calls = 0;
  firstStarted = false;
  release(): void {
    this.open();
  }
  async appendLog(_id: string, _lease: number, chunks: LogChunkInput[]): Promise<void> {
    if (this.calls++ === 0) {
      this.firstStarted = true;
      await this.gate;
    }
    for (const c of chunks) this.written.push(c.text);
  }
}

describe("LogShipper while the run goes on", () => {
  it("ships a line within a flush after a flush timer found nothing left to write", async () => {
    const sink = new GatedSink();
    const shipper = new LogShipper(sink, "b4", 1);
    shipper.line("line 1", "stdout");
    await eventually(async () => sink.firstStarted, 5000);
    // Line 2 comes while line 1's write is in flight: it sets a flush timer, but the running write
    // takes line 2 itself once line 1 is stored. The timer then fires with nothing to write.
    shipper.line("line 2", "stdout");
    sink.release();
    await eventually(async () => sink.written.join("").includes("line 2"), 5000);
    await new Promise((r) => setTimeout(r, 700)); // past that timer
    shipper.line("line 3", "stdout");
    // Shipped by its own flush, long before the end of the run (it once waited for close()).
    await eventually(async () => sink.written.join("").includes("line 3"), 5000);
    await shipper.close();
    expect(sink.written.join("")).toBe("line 1\nline 2\nline 3\n");
  });
});

/**
 * The same situation, then close() with nothing left: close() once awaited the settled write over and
 * over, a loop of microtasks that never yields, so the worker's main thread froze for good while its
 * heartbeat thread kept the build's lease (the build stayed running forever). Run in a child process
 * on the built shipper (npm test builds first), so that a spinning close() fails this test by its
 * timeout instead of freezing the test run.
 */
it("close() returns after a flush timer found nothing to write", () => {
  const shipper = pathToFileURL(path.resolve("dist/src/worker/log-shipper.js")).href;
  const script = `
    const { LogShipper } = await import(${JSON.stringify(shipper)});
    let open = () => {};
    const gate = new Promise((r) => { open = r; });
    let calls = 0;
    const sink = { async appendLog() { if (calls++ === 0) await gate; } };
    const s = new LogShipper(sink, "b5", 1);
    s.line("line 1", "stdout");
    await new Promise((r) => setTimeout(r, 600));
    s.line("line 2", "stdout");
    open();
    await new Promise((r) => setTimeout(r, 700));
    await s.close();
    console.log("closed");
  `;
  const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    timeout: 20_000,
    encoding: "utf8",
  });
  expect(child.error?.message ?? null, `close() did not return: ${child.stderr}`).toBeNull();
  expect(child.stdout.trim()).toBe("closed");
});
