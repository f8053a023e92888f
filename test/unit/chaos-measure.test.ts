/**
 * The chaos suite's verdicts (bench/chaos/measure.ts, fleet.ts): the rule that says a build was started
 * more than once, the time to recover, and why a process died. No servers: run files and exits as the
 * harness records them.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { deathReason } from "../../bench/chaos/fleet.js";
import { doubleRuns, readRuns, recoverySeconds } from "../../bench/chaos/measure.js";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A phase directory with one run file per worker incarnation. */
function runDir(files: Record<string, string[]>): string {
  const dir = mkdtempSync(path.join(tmpdir(), "chaos-measure-"));
  dirs.push(dir);
  for (const [worker, lines] of Object.entries(files)) {
    writeFileSync(path.join(dir, `runs-${worker}.log`), `${lines.join("\n")}\n`);
  }
  return dir;
}

describe("doubleRuns", () => {
  it("one run per build is no double run", () => {
    const dir = runDir({ "w1.1": ["start b1 1 w1.1 1000", "end b1 1 w1.1 1200", "start b2 1 w1.1 1100"] });
    const figures = doubleRuns(readRuns(dir), [], ["b1", "b2", "b3"]);
    expect(figures).toMatchObject({ runs: 2, doubleRun: 0, legitimateReruns: 0, neverStarted: 1 });
  });

  it("two runs at once on two workers is a double run", () => {
    const dir = runDir({
      "w1.1": ["start b1 1 w1.1 1000", "end b1 1 w1.1 3000"],
      "w2.1": ["start b1 2 w2.1 2000", "end b1 2 w2.1 2500"],
    });
    const figures = doubleRuns(readRuns(dir), [], ["b1"]);
    expect(figures.doubleRun).toBe(1);
    expect(figures.doubleSample[0]).toContain("still running");
  });

  it("a run that never ended, on a worker that never exited, overlaps the next run", () => {
    const dir = runDir({ "w1.1": ["start b1 1 w1.1 1000"], "w2.1": ["start b1 2 w2.1 20000"] });
    expect(doubleRuns(readRuns(dir), [], ["b1"]).doubleRun).toBe(1);
  });

  it("a build run again after a run that finished its work is a double run", () => {
    const dir = runDir({
      "w1.1": ["start b1 1 w1.1 1000", "end b1 1 w1.1 1200"],
      "w2.1": ["start b1 2 w2.1 15000", "end b1 2 w2.1 15200"],
    });
    const figures = doubleRuns(readRuns(dir), [{ name: "w1.1", at: 30_000, expected: true }], ["b1"]);
    expect(figures.doubleRun).toBe(1);
    expect(figures.doubleSample[0]).toContain("ran again");
  });

  it("a rerun after the first run's worker was killed is allowed, also when the first run had finished", () => {
    const dir = runDir({
      "w1.1": ["start b1 1 w1.1 1000", "start b2 1 w1.1 1000", "end b2 1 w1.1 1100"],
      "w2.1": ["start b1 2 w2.1 15000", "end b1 2 w2.1 15200", "start b2 2 w2.1 15000"],
    });
    const exits = [{ name: "w1.1", at: 1150, expected: true }];
    const figures = doubleRuns(readRuns(dir), exits, ["b1", "b2"]);
    expect(figures).toMatchObject({ doubleRun: 0, legitimateReruns: 2 });
  });

  it("a rerun that starts before the killed worker's exit overlaps it", () => {
    const dir = runDir({ "w1.1": ["start b1 1 w1.1 1000"], "w2.1": ["start b1 2 w2.1 5000"] });
    const exits = [{ name: "w1.1", at: 6000, expected: true }];
    expect(doubleRuns(readRuns(dir), exits, ["b1"]).doubleRun).toBe(1);
  });

  it("a rerun after an aborted run (SIGTERM) is allowed", () => {
    const dir = runDir({
      "w1.1": ["start b1 1 w1.1 1000", "abort b1 1 w1.1 1500"],
      "w2.1": ["start b1 2 w2.1 2000", "end b1 2 w2.1 2200"],
    });
    expect(doubleRuns(readRuns(dir), [], ["b1"])).toMatchObject({ doubleRun: 0, legitimateReruns: 1 });
  });
});

describe("recoverySeconds", () => {
  const steady = (from: number, to: number, perSec: number) =>
    Array.from({ length: ((to - from) / 1000) * perSec }, (_, i) => from + (i * 1000) / perSec);

  it("is the wait from the end of the fault to a 2 s span at half the clean rate", () => {
    const completions = [...steady(0, 10_000, 10), ...steady(15_000, 30_000, 10)];
    expect(recoverySeconds(completions, 10_000, 30_000, 10)).toBeCloseTo(4, 0);
  });

  it("is 0 when the rate never dropped, and null when it never came back", () => {
    expect(recoverySeconds(steady(0, 30_000, 10), 10_000, 30_000, 10)).toBe(0);
    expect(recoverySeconds(steady(0, 10_000, 10), 10_000, 30_000, 10)).toBeNull();
  });
});

describe("deathReason", () => {
  it("finds the uncaught error's message in a Node.js crash", () => {
    const tail = [
      "node:events:502",
      "      throw er; // Unhandled 'error' event",
      "Error: Connection terminated unexpectedly",
      "    at Connection.<anonymous> (node_modules/pg/lib/client.js:204:73)",
      "",
      "Node.js v20.20.2",
    ];
    expect(deathReason(tail)).toBe("Error: Connection terminated unexpectedly");
  });

  it("finds a PostgreSQL error thrown unhandled", () => {
    const tail = [
      "      throw er; // Unhandled 'error' event",
      "error: terminating connection due to administrator command",
      "    at parseErrorMessage (node_modules/pg-protocol/dist/parser.js:306:11)",
      "  code: '57P01',",
      "}",
    ];
    expect(deathReason(tail)).toBe("error: terminating connection due to administrator command");
  });

  it("falls back to the last error-level log line", () => {
    const tail = [
      '{"level":30,"msg":"worker started"}',
      '{"level":60,"msg":"fatal","err":{"message":"boom"}}',
    ];
    expect(deathReason(tail)).toBe("fatal boom");
  });
});
