/**
 * The build command runner with real processes (sh, python3): environment, progress protocol, log
 * tail, exit outcomes, and stopping whole process groups, grandchildren included.
 *
 * Nothing here depends on speed: the tests wait for the command to say "ready" before stopping it,
 * and only the tests whose processes ignore SIGTERM wait out a (short) grace period.
 */
import { spawn } from "node:child_process";
import { getEventListeners, once } from "node:events";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type CommandResult,
  GATED_START,
  type ProgressUpdate,
  type RunBuildCommandOptions,
  runBuildCommand,
} from "../../src/worker/command-runner.js";

const BUILD = {
  id: "b-123",
  lease: 7,
  strategyId: "strat-9",
  params: { lr: 0.01, name: "ça va", n: [1, 2] },
};

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(path.join(tmpdir(), "oculus-runner-test-"));
});
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

interface Run {
  result: CommandResult;
  logs: { line: string; stream: "stdout" | "stderr" }[];
  progress: ProgressUpdate[];
}

/** Runs `command`; `abortOn` aborts the signal when that log line appears. */
async function run(
  command: string,
  options: Partial<RunBuildCommandOptions> & { abortOn?: string } = {},
): Promise<Run> {
  const controller = new AbortController();
  const logs: Run["logs"] = [];
  const progress: ProgressUpdate[] = [];
  const { abortOn, ...rest } = options;
  const result = await runBuildCommand({
    command,
    build: BUILD,
    signal: controller.signal,
    onProgress: (p) => progress.push(p),
    onLog: (line, stream) => {
      logs.push({ line, stream });
      if (line === abortOn) controller.abort();
    },
    ...rest,
  });
  return { result, logs, progress };
}

/** Processes of the group that are not zombies. kill(-pgid, 0) alone cannot tell: it succeeds for
 * zombies, and on machines whose PID 1 does not reap orphans those stay for good. */
function liveGroupMembers(pgid: number): number[] {
  const live: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = procStat(Number(name));
    if (stat && stat.pgrp === pgid && stat.state !== "Z" && stat.state !== "X") live.push(Number(name));
  }
  return live;
}

function procStat(pid: number): { state: string; pgrp: number } | undefined {
  try {
    const line = readFileSync(`/proc/${pid}/stat`, "utf8");
    const [state, , pgrp] = line.slice(line.lastIndexOf(")") + 2).split(" ");
    return { state: state ?? "", pgrp: Number(pgrp) };
  } catch {
    return undefined;
  }
}

function expectGroupGone(pgid: number): void {
  expect(liveGroupMembers(pgid)).toEqual([]);
  try {
    process.kill(-pgid, 0);
  } catch (err) {
    expect((err as NodeJS.ErrnoException).code).toBe("ESRCH");
  }
}

/** Resolves once process `pid` runs the program `name` (polls: a fork becomes it only at exec). */
async function untilExecuted(pid: number, name: string): Promise<void> {
  for (;;) {
    try {
      if (readFileSync(`/proc/${pid}/comm`, "utf8").trim() === name) return;
    } catch {
      return; // gone already: nothing left to wait for
    }
    await sleep(10);
  }
}

/** The number after `prefix ` in the logged lines. */
function loggedNumber(logs: Run["logs"], prefix: string): number {
  const line = logs.find((l) => l.line.startsWith(`${prefix} `));
  if (!line) throw new Error(`no "${prefix}" line in ${JSON.stringify(logs)}`);
  return Number(line.line.slice(prefix.length + 1));
}

describe("runBuildCommand: environment", () => {
  it("passes the build id, lease, strategy, params and a params file holding the same JSON", async () => {
    const tmpDir = mkdtempSync(path.join(scratch, "tmp-"));
    const { result, logs } = await run(
      [
        'echo "id=$OCULUS_BUILD_ID"',
        'echo "lease=$OCULUS_BUILD_LEASE"',
        'echo "strategy=$OCULUS_STRATEGY_ID"',
        'echo "params=$OCULUS_BUILD_PARAMS"',
        'echo "file=$OCULUS_BUILD_PARAMS_FILE"',
        'echo "base=$BASE_VAR"',
        'if [ "$(cat "$OCULUS_BUILD_PARAMS_FILE")" = "$OCULUS_BUILD_PARAMS" ]; then echo same; fi',
      ].join("\n"),
      { tmpDir, env: { PATH: process.env.PATH, BASE_VAR: "from-base" } },
    );
    expect(result.outcome).toBe("completed");
    const lines = logs.map((l) => l.line);
    expect(lines).toContain("id=b-123");
    expect(lines).toContain("lease=7");
    expect(lines).toContain("strategy=strat-9");
    expect(lines).toContain("base=from-base");
    expect(lines).toContain("same");
    const params = lines.find((l) => l.startsWith("params="))?.slice("params=".length);
    expect(JSON.parse(params ?? "")).toEqual(BUILD.params);

    // The file lived in a private directory under tmpDir, and both are gone once the run is over.
    const file = lines.find((l) => l.startsWith("file="))?.slice("file=".length) ?? "";
    expect(path.dirname(path.dirname(file))).toBe(tmpDir);
    expect(existsSync(file)).toBe(false);
    expect(readdirSync(tmpDir)).toEqual([]);
  });

  it("removes the params file after a failed run too", async () => {
    const { result, logs } = await run('echo "file=$OCULUS_BUILD_PARAMS_FILE"; exit 1');
    expect(result.outcome).toBe("failed");
    const file = logs[0]?.line.slice("file=".length) ?? "";
    expect(file).not.toBe("");
    expect(existsSync(path.dirname(file))).toBe(false);
  });

  it("runs in cwd", async () => {
    const { result, logs } = await run("pwd", { cwd: scratch });
    expect(result.outcome).toBe("completed");
    expect(logs.map((l) => l.line)).toEqual([scratch]);
  });
});

describe("runBuildCommand: output protocol", () => {
  it("parses progress lines in order and returns the ::result value", async () => {
    const { result, progress, logs } = await run(
      [
        `echo '::progress {"phase":"designing","percent":0}'`,
        "echo hello",
        `echo '::progress {"phase":"training","percent":42,"iteration":3,"maxIterations":10,"message":"epoch 3","extra":true}'`,
        `echo '::result {"image":"oculus/strat-9:b-123"}'`,
        `echo '::progress {"percent":100}'`,
      ].join("\n"),
    );
    expect(result).toEqual({
      outcome: "completed",
      exitCode: 0,
      result: { image: "oculus/strat-9:b-123" },
      logTail: "hello\n",
    });
    expect(progress).toEqual([
      { phase: "designing", percent: 0 },
      { phase: "training", percent: 42, iteration: 3, maxIterations: 10, message: "epoch 3" },
      { percent: 100 },
    ]);
    expect(logs).toEqual([{ line: "hello", stream: "stdout" }]);
  });

  it("treats malformed progress lines as log lines", async () => {
    const malformed = [
      "::progress",
      "::progress not json",
      "::progress [1,2]",
      "::progress null",
      '::progress {"percent":101}',
      '::progress {"percent":"42"}',
      '::progress {"iteration":1.5}',
      '::progress {"maxIterations":-1}',
      '::progress {"phase":7}',
      `::progress {"phase":"${"p".repeat(101)}"}`,
      `::progress {"message":"${"m".repeat(1001)}"}`,
      '::progress {"percent":1e400}',
      "::progressive {}",
    ];
    const script = malformed.map((line) => `printf '%s\\n' '${line}'`).join("\n");
    const { result, progress, logs } = await run(`${script}\necho '::progress {"percent":5}'`);
    expect(result.outcome).toBe("completed");
    expect(progress).toEqual([{ percent: 5 }]);
    expect(logs.map((l) => l.line)).toEqual(malformed);
    expect(result.logTail).toBe(`${malformed.join("\n")}\n`);
  });

  it("reads the protocol on stdout only, takes the first valid ::result, and logs the rest", async () => {
    const { result, progress, logs } = await run(
      [
        `echo '::progress {"percent":1}' >&2`,
        "echo '::result not json'",
        `echo '::result "first"'`,
        `echo '::result "second"'`,
      ].join("\n"),
    );
    expect(result.outcome === "completed" && result.result).toBe("first");
    expect(progress).toEqual([]);
    // stdout and stderr are separate pipes: their relative order is not kept.
    expect(logs.filter((l) => l.stream === "stdout").map((l) => l.line)).toEqual([
      "::result not json",
      '::result "second"',
    ]);
    expect(logs.filter((l) => l.stream === "stderr").map((l) => l.line)).toEqual([
      '::progress {"percent":1}',
    ]);
  });

  it("keeps going when the callbacks throw", async () => {
    const result = await runBuildCommand({
      command: `echo one; echo '::progress {"percent":1}'; echo two`,
      build: BUILD,
      signal: new AbortController().signal,
      onLog: () => {
        throw new Error("log sink broken");
      },
      onProgress: () => {
        throw new Error("progress sink broken");
      },
    });
    expect(result).toMatchObject({ outcome: "completed", logTail: "one\ntwo\n" });
  });

  it("keeps only the last logTailBytes of a large output, cut at a line boundary", async () => {
    const script = path.join(scratch, "big.py");
    // About 1 MB in 20,000 numbered lines.
    writeFileSync(
      script,
      [
        "import sys",
        "for i in range(20000):",
        // stderr only early on: the two pipes' relative order is not kept, and the test wants the last line.
        "    out = sys.stderr if i < 1000 and i % 10 == 0 else sys.stdout",
        "    out.write('line %05d %s\\n' % (i, 'x' * 40))",
        "sys.stdout.write('last line\\n')",
      ].join("\n"),
    );
    const logTailBytes = 4096;
    const { result, logs } = await run(`python3 ${script}`, { logTailBytes });
    expect(result.outcome).toBe("completed");
    expect(logs).toHaveLength(20001);
    expect(Buffer.byteLength(result.logTail)).toBeLessThanOrEqual(logTailBytes);
    expect(Buffer.byteLength(result.logTail)).toBeGreaterThan(logTailBytes - 100);
    expect(result.logTail.endsWith("last line\n")).toBe(true);
    const tailLines = result.logTail.split("\n").slice(0, -1);
    for (const line of tailLines.slice(0, -1)) expect(line).toMatch(/^line \d{5} x{40}$/);
  });

  it("cuts a single line longer than logTailBytes, keeping its end", async () => {
    const { result } = await run(`python3 -c "import sys; sys.stdout.write('é' * 100000 + 'END')"`, {
      logTailBytes: 1001,
    });
    expect(result.outcome).toBe("completed");
    expect(Buffer.byteLength(result.logTail)).toBeLessThanOrEqual(1001);
    expect(result.logTail).toMatch(/^é+END\n$/);
  });
});

describe("runBuildCommand: exit", () => {
  it("completes on exit code 0, with a null result when none was printed", async () => {
    const { result } = await run("echo done");
    expect(result).toEqual({ outcome: "completed", exitCode: 0, result: null, logTail: "done\n" });
  });

  it("fails on a non-zero exit code, with the last output in the log tail", async () => {
    const { result } = await run("echo starting; echo 'oops: disk full' >&2; printf 'no newline'; exit 3");
    expect(result).toEqual({
      outcome: "failed",
      exitCode: 3,
      signal: null,
      error: "exit code 3",
      logTail: expect.any(String),
    });
    expect(result.logTail).toContain("starting\n");
    expect(result.logTail).toContain("oops: disk full\n");
    expect(result.logTail).toContain("no newline\n");
  });

  it("fails with the signal when the command is killed", async () => {
    const { result } = await run("echo before; kill -9 $$");
    expect(result).toEqual({
      outcome: "failed",
      exitCode: null,
      signal: "SIGKILL",
      error: "killed by SIGKILL",
      logTail: "before\n",
    });
  });

  it("fails with a clear error when the working directory does not exist, and never throws", async () => {
    const cwd = path.join(scratch, "no-such-dir");
    const { result } = await run("echo never", { cwd });
    expect(result).toEqual({
      outcome: "failed",
      exitCode: null,
      signal: null,
      error: `cannot start the build command: working directory ${cwd} does not exist`,
      logTail: "",
    });
  });

  it("fails with a clear error when the temp directory does not exist", async () => {
    const tmpDir = path.join(scratch, "no-such-tmp");
    const { result } = await run("echo never", { tmpDir });
    expect(result.outcome).toBe("failed");
    expect(result.outcome === "failed" && result.error).toMatch(
      /^cannot prepare the build command: .*ENOENT/,
    );
  });

  it("runs a build with the largest params the queue accepts", async () => {
    const { MAX_PARAMS_BYTES } = await import("../../src/core/build.js");
    const blob = "a".repeat(MAX_PARAMS_BYTES - 20);
    const result = await runBuildCommand({
      command: 'test "$(cat "$OCULUS_BUILD_PARAMS_FILE")" = "$OCULUS_BUILD_PARAMS" && echo same',
      build: { ...BUILD, params: { blob } },
      signal: new AbortController().signal,
    });
    expect(result).toMatchObject({ outcome: "completed" });
    expect(result.logTail).toContain("same");
  });

  it("fails with a clear error when the params are too large for an environment variable", async () => {
    // The queue accepts params up to 100 KiB; called directly, the runner may get more than the 128 KiB
    // Linux allows for one environment string.
    const result = await runBuildCommand({
      command: "echo never",
      build: { ...BUILD, params: { blob: "a".repeat(200_000) } },
      signal: new AbortController().signal,
    });
    expect(result.outcome).toBe("failed");
    expect(result.outcome === "failed" && result.error).toMatch(
      /^cannot start the build command: spawn E2BIG: OCULUS_BUILD_PARAMS would be 200\d{3} bytes, more than the 131072 bytes/,
    );
  });

  it("ends background processes the command left behind", async () => {
    // The background sleep also holds the output pipes open: the runner must not wait for it.
    const { result, logs } = await run('sleep 60 & echo "pgid $$"; echo "child $!"; exit 0', {
      graceMs: 400,
    });
    expect(result).toMatchObject({ outcome: "completed", exitCode: 0 });
    expectGroupGone(loggedNumber(logs, "pgid"));
    expect(procStat(loggedNumber(logs, "child"))?.state ?? "gone").toMatch(/^(gone|Z)$/);
  });
});

describe("runBuildCommand: stop", () => {
  it("does not start the command when the signal has already aborted", async () => {
    const marker = path.join(scratch, "started");
    const result = await runBuildCommand({
      command: `touch ${marker}`,
      build: BUILD,
      signal: AbortSignal.abort(),
    });
    expect(result).toEqual({
      outcome: "stopped",
      terminatedBy: null,
      exitCode: null,
      signal: null,
      logTail: "",
    });
    expect(existsSync(marker)).toBe(false);
  });

  it("sends SIGTERM to the group; a command that exits on it is stopped by SIGTERM", async () => {
    const controller = new AbortController();
    const logs: string[] = [];
    let child = 0;
    const result = await runBuildCommand({
      command:
        'trap \'echo got TERM; exit 0\' TERM; echo "pgid $$"; sleep 60 & echo "child $!"; echo ready; wait',
      build: BUILD,
      signal: controller.signal,
      graceMs: 30_000,
      onLog: (line) => {
        logs.push(line);
        if (line.startsWith("child ")) child = Number(line.slice(6));
        // Until the forked subshell has exec'd sleep it still has the shell's TERM trap, which a fork
        // clears: a SIGTERM in that window is lost and only SIGKILL would end the sleep.
        if (line === "ready") void untilExecuted(child, "sleep").then(() => controller.abort());
      },
    });
    expect(result).toMatchObject({ outcome: "stopped", terminatedBy: "SIGTERM", exitCode: 0, signal: null });
    expect(result.logTail).toContain("got TERM\n");
    expectGroupGone(Number(logs.find((l) => l.startsWith("pgid "))?.slice(5)));
    expect(procStat(child)?.state ?? "gone").toMatch(/^(gone|Z)$/);
  });

  it("kills the group with SIGKILL after graceMs when the command and a grandchild ignore SIGTERM", async () => {
    let grandchildPgrp: number | undefined;
    const controller = new AbortController();
    const logs: string[] = [];
    const result = await runBuildCommand({
      // SIG_IGN survives exec: both sleeps ignore SIGTERM too.
      command: 'trap \'\' TERM; sleep 60 & echo "pgid $$"; echo "child $!"; echo ready; sleep 60',
      build: BUILD,
      signal: controller.signal,
      graceMs: 400,
      onLog: (line) => {
        logs.push(line);
        if (line !== "ready") return;
        const child = Number(logs.find((l) => l.startsWith("child "))?.slice(6));
        grandchildPgrp = procStat(child)?.pgrp;
        controller.abort();
      },
    });
    const pgid = Number(logs.find((l) => l.startsWith("pgid "))?.slice(5));
    // The grandchild was in the command's own group, which is what the signals went to.
    expect(grandchildPgrp).toBe(pgid);
    expect(pgid).not.toBe(procStat(process.pid)?.pgrp);
    expect(result).toMatchObject({ outcome: "stopped", terminatedBy: "SIGKILL", exitCode: null });
    expectGroupGone(pgid);
  });

  it("kills a python grandchild that ignores SIGTERM, started through sh -c", async () => {
    const script = path.join(scratch, "stubborn.py");
    writeFileSync(
      script,
      [
        "import os, signal, subprocess, time",
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
        "child = subprocess.Popen(['sleep', '60'])",
        "print('pgid', os.getpgid(0), flush=True)",
        "print('child', child.pid, flush=True)",
        "print('ready', flush=True)",
        "time.sleep(60)",
      ].join("\n"),
    );
    const { result, logs } = await run(`python3 ${script}; echo unreachable`, {
      abortOn: "ready",
      graceMs: 400,
    });
    // Python ignores SIGTERM, and so does its sleep (SIG_IGN survives fork and exec): SIGKILL was needed.
    expect(result).toMatchObject({ outcome: "stopped", terminatedBy: "SIGKILL" });
    expect(result.logTail).not.toContain("unreachable");
    expectGroupGone(loggedNumber(logs, "pgid"));
    expect(procStat(loggedNumber(logs, "child"))?.state ?? "gone").toMatch(/^(gone|Z)$/);
  });

  it("removes its abort listener once done, so a long-lived shutdown signal does not collect them", async () => {
    const controller = new AbortController();
    let listenersWhileRunning = 0;
    await runBuildCommand({
      command: "echo running",
      build: BUILD,
      signal: controller.signal,
      onLog: () => {
        listenersWhileRunning = getEventListeners(controller.signal, "abort").length;
      },
    });
    expect(listenersWhileRunning).toBe(1);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });
});

describe("the gate before a build command starts", () => {
  // The worker writes the line once the orphan watchdog is armed; a worker that died before that
  // closes the pipe without it.
  const gated = (command: string, line: string | undefined) => {
    const child = spawn("/bin/sh", ["-c", GATED_START, "oculus-build", command], {
      stdio: ["pipe", "pipe", "ignore"],
    });
    let out = "";
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stdin?.end(line);
    return once(child, "close").then(([code]) => ({ code: code as number | null, out, pid: child.pid }));
  };

  it("runs the command as the same process, with stdin from /dev/null, after the line", async () => {
    const ran = await gated('echo "pid $$"; cat; echo "args:$#"; exit 3', "go\n");
    expect(ran.code).toBe(3);
    expect(ran.out).toBe(`pid ${ran.pid}\nargs:0\n`);
  });

  it("never starts the command when the pipe ends without the line", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "oculus-gate-"));
    try {
      const ran = await gated(`touch ${dir}/started`, undefined);
      expect(ran.code).toBe(0);
      expect(existsSync(`${dir}/started`)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
