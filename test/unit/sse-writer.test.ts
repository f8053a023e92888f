/**
 * The SSE write budget: frames that come while a stream's window is open leave together, in order,
 * in one write; the window follows the number of open streams.
 */
import type { ServerResponse } from "node:http";
import { describe, expect, it } from "vitest";
import { CoalescingWriter, SSE_MAX_COALESCE_MS, StreamRegistry } from "../../src/http/sse.js";

/** Just what the writer uses of a response; records each write. */
function recordingResponse() {
  const writes: string[] = [];
  let onWrite: (() => void) | undefined;
  const res = {
    writableEnded: false,
    destroyed: false,
    writableNeedDrain: false,
    write(chunk: string) {
      writes.push(chunk);
      onWrite?.();
      return true;
    },
  };
  const nextWrite = () => new Promise<void>((resolve) => (onWrite = resolve));
  return { res: res as unknown as ServerResponse, writes, nextWrite };
}

describe("SSE coalescing writer", () => {
  it("writes a frame after a quiet spell, and frames of the window after it together, in order", async () => {
    const { res, writes, nextWrite } = recordingResponse();
    const writer = new CoalescingWriter(res, () => 30);
    let written = nextWrite();
    writer.add("a\n\n");
    await written;
    expect(writes).toEqual(["a\n\n"]);

    written = nextWrite();
    writer.add("b\n\n");
    writer.add("c\n\n");
    await written;
    expect(writes).toEqual(["a\n\n", "b\n\nc\n\n"]);
  });

  it("flush() writes what is pending at once; close() drops it", async () => {
    const { res, writes } = recordingResponse();
    const writer = new CoalescingWriter(res, () => 60_000);
    writer.add("x\n\n");
    writer.flush();
    writer.add("y\n\n"); // inside the (long) window: held
    writer.flush();
    writer.add("z\n\n");
    writer.close();
    await new Promise((r) => setTimeout(r, 20));
    expect(writes).toEqual(["x\n\n", "y\n\n"]);
  });

  it("the window grows with the open streams, up to its cap", () => {
    const registry = new StreamRegistry();
    expect(registry.coalesceMs()).toBe(0);
    const controllers = Array.from({ length: 100 }, () => registry.track());
    expect(registry.coalesceMs()).toBe(5);
    for (let i = 0; i < 2000; i++) registry.track();
    expect(registry.coalesceMs()).toBe(SSE_MAX_COALESCE_MS);
    for (const c of controllers) registry.release(c);
  });
});
