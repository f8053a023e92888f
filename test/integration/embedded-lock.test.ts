/**
 * The embedded store is one process's: a second open of the same data directory is refused with a
 * clear error (two writers would corrupt it), and a lock left by a killed process is taken over.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BuildQueue, ConfigError } from "../../src/index.js";

describe("embedded store lock", () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "oculus-lock-"));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it("refuses a second open of the same data directory, and allows it after close", async () => {
    const first = await BuildQueue.open({ dataDir });
    try {
      const second = BuildQueue.open({ dataDir });
      await expect(second).rejects.toBeInstanceOf(ConfigError);
      await expect(second).rejects.toThrow(/in use by process \d+/);
      await first.submit({ strategyId: "still-fine" });
    } finally {
      await first.close();
    }
    const again = await BuildQueue.open({ dataDir });
    expect(await again.length()).toBe(1);
    await again.close();
  });

  it("takes over a lock whose process is gone", async () => {
    writeFileSync(path.join(dataDir, "oculus.lock"), "999999999");
    const queue = await BuildQueue.open({ dataDir });
    expect(await queue.length()).toBe(1);
    await queue.close();
  });
});
