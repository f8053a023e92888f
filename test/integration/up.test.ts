/**
 * `npm start` runs `oculus up` on the embedded store: it must come up with no server at all, run the
 * demo builds to completion and shut down cleanly on SIGTERM.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BuildQueue } from "../../src/index.js";

describe("oculus up (the main command)", () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "oculus-up-"));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it("runs demo builds to completion on the embedded store and exits cleanly", async () => {
    const child = spawn("node", [path.resolve("dist/src/cli/main.js"), "up", "--demo", "--workers", "2"], {
      env: { PATH: process.env.PATH ?? "", OCULUS_DATA_DIR: dataDir, OCULUS_LOG_LEVEL: "warn" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    const deadline = Date.now() + 45_000;
    while ((out.match(/completed$/gm) ?? []).length < 2) {
      if (Date.now() > deadline) throw new Error(`demo builds did not complete:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(out).toMatch(/embedded \(PGlite/);
    child.kill("SIGTERM");
    expect(await exited).toBe(0);

    // The record survived the process: both demo builds are completed in the embedded store.
    const queue = await BuildQueue.open({ dataDir });
    try {
      const res = await queue.store.db.query<{ status: string }>("SELECT status FROM builds");
      expect(res.rows.map((r) => r.status)).toEqual(["completed", "completed"]);
    } finally {
      await queue.close();
    }
  });
});
