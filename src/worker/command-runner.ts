/**
 * The build command runner: runs one build's shell command as a child process, feeds its progress and
 * log lines to the worker, and stops it on request. Storage-free: the caller reports the result.
 *
 * The command runs in its own process group (a new session, `detached: true`), so that a stop reaches
 * everything it started (`sh -c "python3 train.py"`, background jobs, ...), and so that the runner can
 * tell when all of it is gone: it resolves only once no live process of the group is left.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { buildBaseEnv } from "./build-env.js";

export const DEFAULT_GRACE_MS = 10_000;
export const DEFAULT_LOG_TAIL_BYTES = 64 * 1024;

/** A longer line without a newline is handed on in pieces, so one runaway line cannot exhaust memory. */
const MAX_LINE_CHARS = 1024 * 1024;
/** How long to wait for the output pipes to close once the group is gone (a process that left the
 * group with setsid may still hold them; its output is not the build's any more). */
const PIPE_DRAIN_MS = 2000;
/** Polling bounds while waiting for a process group to die: quick at first, cheap later. */
const POLL_FIRST_MS = 10;
const POLL_MAX_MS = 100;

const PHASE_MAX_CHARS = 100;
const MESSAGE_MAX_CHARS = 1000;

export interface ProgressUpdate {
  phase?: string;
  /** 0..100 */
  percent?: number;
  iteration?: number;
  maxIterations?: number;
  message?: string;
}

export interface RunBuildCommandOptions {
  /** A shell command line, run with `/bin/sh -c`. */
  command: string;
  build: { id: string; lease: number; strategyId: string; params: Record<string, unknown> };
  /**
   * Aborts on stop or shutdown: the command's process group gets SIGTERM, then SIGKILL after graceMs.
   * An abort reason with a numeric `graceMs` shortens the grace to that (the worker's lease fence:
   * the group must be gone before the build's lease can lapse).
   */
  signal: AbortSignal;
  /** Time between SIGTERM and SIGKILL. Default 10 s. */
  graceMs?: number;
  /** Called for each valid `::progress {json}` line, in order. Errors it throws are ignored. */
  onProgress?: (progress: ProgressUpdate) => void;
  /** Called for each output line that is not a protocol line. Errors it throws are ignored. */
  onLog?: (line: string, stream: "stdout" | "stderr") => void;
  /** How much of the last output (stdout and stderr combined) the result keeps. Default 64 KiB. */
  logTailBytes?: number;
  cwd?: string;
  /**
   * Base environment of the command, used as given (the OCULUS_BUILD_* variables are added). Default:
   * the allowlisted variables of process.env only (build-env.ts), never the queue's secrets.
   */
  env?: NodeJS.ProcessEnv;
  /** Where the private directory holding the params file is created. Default os.tmpdir(). */
  tmpDir?: string;
}

export interface CompletedCommand {
  outcome: "completed";
  exitCode: 0;
  /** The value of the `::result {json}` line, or null if the command printed none. */
  result: unknown;
  logTail: string;
}

export interface FailedCommand {
  outcome: "failed";
  /** null when killed by a signal or when the command could not start. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  error: string;
  logTail: string;
}

export interface StoppedCommand {
  outcome: "stopped";
  /** The strongest signal the group needed; null if the signal had aborted before the command started. */
  terminatedBy: "SIGTERM" | "SIGKILL" | null;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  logTail: string;
}

export type CommandResult = CompletedCommand | FailedCommand | StoppedCommand;

type StopSignal = "SIGTERM" | "SIGKILL";
type ProcessEnd = { code: number | null; signal: NodeJS.Signals | null } | { error: Error };

/** Runs the build's command to its end; never throws (a command that cannot start is a failed build). */
export async function runBuildCommand(options: RunBuildCommandOptions): Promise<CommandResult> {
  if (options.signal.aborted) return notStarted();
  const problem = await workingDirectoryProblem(options.cwd);
  if (problem) return failedToStart(problem);
  const prepared = await writeParamsFile(options);
  if ("error" in prepared) return failedToStart(prepared.error);
  try {
    // Preparing takes a moment: a stop that came meanwhile must not start the command.
    if (options.signal.aborted) return notStarted();
    return await runProcess(options, buildEnv(options, prepared.json, prepared.file));
  } finally {
    await rm(prepared.dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Writes the params to a file in a new private directory (mode 0700, from mkdtemp). */
async function writeParamsFile(
  options: RunBuildCommandOptions,
): Promise<{ dir: string; file: string; json: string } | { error: string }> {
  let dir: string | undefined;
  try {
    const json = JSON.stringify(options.build.params);
    dir = await mkdtemp(path.join(options.tmpDir ?? tmpdir(), "oculus-build-"));
    const file = path.join(dir, "params.json");
    await writeFile(file, json, { mode: 0o600 });
    return { dir, file, json };
  } catch (err) {
    if (dir) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    return { error: `cannot prepare the build command: ${errorMessage(err)}` };
  }
}

function buildEnv(
  options: RunBuildCommandOptions,
  paramsJson: string,
  paramsFile: string,
): NodeJS.ProcessEnv {
  return {
    ...(options.env ?? buildBaseEnv(process.env)),
    OCULUS_BUILD_ID: options.build.id,
    OCULUS_BUILD_LEASE: String(options.build.lease),
    OCULUS_STRATEGY_ID: options.build.strategyId,
    OCULUS_BUILD_PARAMS: paramsJson,
    OCULUS_BUILD_PARAMS_FILE: paramsFile,
  };
}

/**
 * How the command is started: its shell first waits for one line on stdin, which the worker writes
 * once the orphan watchdog (below) holds the group's id, then becomes the command (`exec`: the same
 * process, so `$$` is still the group's leader) with stdin from /dev/null. Without the gate a worker
 * killed between the two spawns (a busy machine can hold it there for a while) left a command running
 * with no watchdog. A worker that dies before the line never starts the command: `read` meets the
 * pipe's end and the shell exits.
 */
export const GATED_START = 'read -r _ || exit 0; exec /bin/sh -c "$1" oculus-build < /dev/null';

/**
 * The command's process group outlives a worker killed with SIGKILL (it is detached on purpose, so
 * that signals reach the whole build). A small watchdog outside the group ends the group when this
 * worker process is gone: SIGTERM, then SIGKILL after the grace period, as a stop would. Its result
 * could never count anyway (the build's lease is taken over), but a build must not keep running,
 * using a GPU, after its worker died.
 *
 * The watchdog learns of the worker's end from its stdin, a pipe only this process holds: the kernel
 * closes it however the worker ends, so `read` returns at once. (Polling `kill -0 <worker pid>` was
 * slower and could be fooled by a reused process id.) The returned function tells it the command has
 * ended and it can go.
 */
function startOrphanWatchdog(pgid: number, graceMs: number): () => void {
  const graceSec = Math.max(1, Math.ceil(graceMs / 1000));
  const script = [
    "read -r line",
    '[ "$line" = done ] && exit 0',
    `kill -TERM -${pgid} 2>/dev/null || exit 0`,
    `sleep ${graceSec}`,
    `kill -KILL -${pgid} 2>/dev/null`,
  ].join("\n");
  try {
    const watchdog = spawn("/bin/sh", ["-c", script], {
      detached: true,
      stdio: ["pipe", "ignore", "ignore"],
    });
    watchdog.on("error", () => undefined);
    watchdog.stdin?.on("error", () => undefined);
    watchdog.unref();
    return () => watchdog.stdin?.end("done\n");
  } catch {
    // Without a watchdog the build still runs normally; only a SIGKILLed worker would leave it behind.
    return () => undefined;
  }
}

/** Node reports a missing cwd as "spawn /bin/sh ENOENT", which points at the wrong thing: check first. */
async function workingDirectoryProblem(cwd: string | undefined): Promise<string | undefined> {
  if (cwd === undefined) return undefined;
  try {
    const info = await stat(cwd);
    return info.isDirectory() ? undefined : `cannot start the build command: ${cwd} is not a directory`;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return `cannot start the build command: working directory ${cwd} does not exist`;
    return `cannot start the build command: working directory ${cwd}: ${errorMessage(err)}`;
  }
}

async function runProcess(options: RunBuildCommandOptions, env: NodeJS.ProcessEnv): Promise<CommandResult> {
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  const output = new OutputHandler(
    options.logTailBytes ?? DEFAULT_LOG_TAIL_BYTES,
    options.onProgress,
    options.onLog,
  );
  let child: ChildProcess;
  try {
    child = spawn("/bin/sh", ["-c", GATED_START, "oculus-build", options.command], {
      cwd: options.cwd,
      env,
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
    });
  } catch (err) {
    return failedToStart(spawnFailure(err, env));
  }
  child.stdin?.on("error", () => undefined); // the command may be gone already (EPIPE)
  const ended = waitForEnd(child);
  const pipesClosed = Promise.all([
    readLines(child.stdout, (line) => output.stdoutLine(line)),
    readLines(child.stderr, (line) => output.stderrLine(line)),
  ]);
  const pgid = child.pid;
  if (pgid === undefined) {
    // Spawning failed; Node reports why on the 'error' event.
    const end = await ended;
    destroyPipes(child);
    return failedToStart(spawnFailure("error" in end ? end.error : new Error("no process id"), env));
  }

  const releaseWatchdog = startOrphanWatchdog(pgid, graceMs);
  child.stdin?.end("go\n"); // the watchdog is armed: the command may start
  let stopping: Promise<StopSignal> | undefined;
  const stop = () => {
    stopping ??= terminateGroup(pgid, graceAfter(options.signal, graceMs));
  };
  options.signal.addEventListener("abort", stop, { once: true });
  if (options.signal.aborted) stop();
  const end = await ended;
  options.signal.removeEventListener("abort", stop);

  // A stop requested before the command ended decides the outcome; otherwise the exit does, and
  // whatever it left running in its group (background jobs it did not wait for) is ended too: no
  // process of a build may outlive it.
  const stoppedBy = stopping ? await stopping : undefined;
  if (!stopping) await endLeftovers(pgid, graceMs);
  releaseWatchdog();

  await Promise.race([pipesClosed, sleep(PIPE_DRAIN_MS)]);
  destroyPipes(child);
  await pipesClosed;

  const logTail = output.logTail();
  if (stoppedBy) return { outcome: "stopped", terminatedBy: stoppedBy, ...exitOf(end), logTail };
  if ("error" in end) {
    return { outcome: "failed", exitCode: null, signal: null, error: end.error.message, logTail };
  }
  if (end.code === 0) return { outcome: "completed", exitCode: 0, result: output.result(), logTail };
  const error = end.code !== null ? `exit code ${end.code}` : `killed by ${end.signal}`;
  return { outcome: "failed", exitCode: end.code, signal: end.signal, error, logTail };
}

/** The grace period for this abort: the reason's `graceMs` when it asks for less. */
function graceAfter(signal: AbortSignal, graceMs: number): number {
  const asked = (signal.reason as { graceMs?: unknown } | undefined)?.graceMs;
  return typeof asked === "number" && asked >= 0 ? Math.min(asked, graceMs) : graceMs;
}

function waitForEnd(child: ChildProcess): Promise<ProcessEnd> {
  return new Promise((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
    child.once("error", (error) => resolve({ error }));
  });
}

function exitOf(end: ProcessEnd): { exitCode: number | null; signal: NodeJS.Signals | null } {
  return "error" in end ? { exitCode: null, signal: null } : { exitCode: end.code, signal: end.signal };
}

function destroyPipes(child: ChildProcess): void {
  child.stdout?.destroy();
  child.stderr?.destroy();
}

/** Linux's limit on one environment string (MAX_ARG_STRLEN), "NAME=value" included. */
const ENV_STRING_MAX_BYTES = 128 * 1024;

/** E2BIG alone does not say that the params are the likely cause (the queue accepts larger ones). */
function spawnFailure(err: unknown, env: NodeJS.ProcessEnv): string {
  const message = `cannot start the build command: ${errorMessage(err)}`;
  if ((err as NodeJS.ErrnoException).code !== "E2BIG") return message;
  const paramsBytes = Buffer.byteLength(`OCULUS_BUILD_PARAMS=${env.OCULUS_BUILD_PARAMS ?? ""}`) + 1;
  if (paramsBytes <= ENV_STRING_MAX_BYTES) return `${message} (environment and command line too large)`;
  return (
    `${message}: OCULUS_BUILD_PARAMS would be ${paramsBytes} bytes, ` +
    `more than the ${ENV_STRING_MAX_BYTES} bytes Linux allows for one environment variable`
  );
}

function notStarted(): StoppedCommand {
  return { outcome: "stopped", terminatedBy: null, exitCode: null, signal: null, logTail: "" };
}

function failedToStart(error: string): FailedCommand {
  return { outcome: "failed", exitCode: null, signal: null, error, logTail: "" };
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ---------------------------------------------------------------------------------------------------
// Process group: signals and liveness

/** SIGTERM to the group, SIGKILL if anything of it is still alive after graceMs; resolves once all of
 * it is gone, with the strongest signal that was needed. */
async function terminateGroup(pgid: number, graceMs: number): Promise<StopSignal> {
  signalGroup(pgid, "SIGTERM");
  if (await waitForGroupGone(pgid, graceMs)) return "SIGTERM";
  signalGroup(pgid, "SIGKILL");
  // SIGKILL cannot be caught or ignored: the group dies as soon as the kernel gets to it.
  await waitForGroupGone(pgid, Number.POSITIVE_INFINITY);
  return "SIGKILL";
}

async function endLeftovers(pgid: number, graceMs: number): Promise<void> {
  if (groupIsAlive(pgid)) await terminateGroup(pgid, graceMs);
}

function signalGroup(pgid: number, signal: StopSignal): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // ESRCH: the group is already gone, which is what we want.
  }
}

/** True once the group is gone, false if it still lives after timeoutMs. */
async function waitForGroupGone(pgid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let pollMs = POLL_FIRST_MS;
  while (groupIsAlive(pgid)) {
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await sleep(Math.min(pollMs, left));
    pollMs = Math.min(pollMs * 2, POLL_MAX_MS);
  }
  return true;
}

/**
 * Whether some process of the group is still running. `kill(-pgid, 0)` alone is not enough: it also
 * succeeds for zombies, and orphaned grandchildren stay zombies for good where PID 1 does not reap
 * (containers and microVMs often run such an init). On Linux /proc tells zombies apart.
 */
function groupIsAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch (err) {
    // EPERM: a member runs as another user (setuid); it exists.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
  return process.platform === "linux" ? procHasLiveMember(pgid) : true;
}

/** Synchronous on purpose: a few hundred tiny reads take a millisecond or two, far less than the same
 * number of round trips through the libuv thread pool; it only runs while a group is being ended. */
function procHasLiveMember(pgid: number): boolean {
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return true;
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    let statLine: string;
    try {
      statLine = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ")".
    const [state, , pgrp] = statLine.slice(statLine.lastIndexOf(")") + 2).split(" ");
    if (Number(pgrp) === pgid && state !== "Z" && state !== "X") return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------------
// Output: lines, protocol, log tail

/** Calls onLine for each line of the stream (without "\n" or "\r\n"); resolves when the stream closes. */
function readLines(stream: Readable | null, onLine: (line: string) => void): Promise<void> {
  if (!stream) return Promise.resolve();
  return new Promise((resolve) => {
    let pending = "";
    stream.setEncoding("utf8"); // decodes multi-byte characters split across chunks
    stream.on("data", (chunk: string) => {
      const lines = (pending + chunk).split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) onLine(withoutCarriageReturn(line));
      if (pending.length > MAX_LINE_CHARS) {
        onLine(pending);
        pending = "";
      }
    });
    // A stream destroyed after the drain timeout emits 'close' without 'end'; 'error' is followed by
    // 'close' too. Either way the last unterminated line still counts.
    stream.on("error", () => undefined);
    stream.once("close", () => {
      if (pending !== "") onLine(withoutCarriageReturn(pending));
      pending = "";
      resolve();
    });
  });
}

function withoutCarriageReturn(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

/** Sorts the command's output lines into progress, result and log. */
class OutputHandler {
  private readonly tail: LogTail;
  private reported: { value: unknown } | undefined;

  constructor(
    logTailBytes: number,
    private readonly onProgress: RunBuildCommandOptions["onProgress"],
    private readonly onLog: RunBuildCommandOptions["onLog"],
  ) {
    this.tail = new LogTail(logTailBytes);
  }

  stdoutLine(line: string): void {
    const progressJson = directiveArgument(line, "::progress");
    if (progressJson !== undefined) {
      const progress = parseProgress(progressJson);
      if (progress) {
        callSafely(() => this.onProgress?.(progress));
        return;
      }
    }
    const resultJson = directiveArgument(line, "::result");
    // Only the first result counts; a second one is shown as output rather than silently dropped.
    if (resultJson !== undefined && !this.reported) {
      const parsed = parseJson(resultJson);
      if (parsed) {
        this.reported = parsed;
        return;
      }
    }
    this.log(line, "stdout");
  }

  /** The protocol is stdout only: stderr is all log. */
  stderrLine(line: string): void {
    this.log(line, "stderr");
  }

  result(): unknown {
    return this.reported ? this.reported.value : null;
  }

  logTail(): string {
    return this.tail.toString();
  }

  private log(line: string, stream: "stdout" | "stderr"): void {
    this.tail.push(line);
    callSafely(() => this.onLog?.(line, stream));
  }
}

/** A throwing callback must not take the worker down: it runs inside a stream event handler. */
function callSafely(callback: () => void): void {
  try {
    callback();
  } catch {
    // ignored, as documented on the options
  }
}

/** The text after `name` and whitespace, if the line is that directive. */
function directiveArgument(line: string, name: string): string | undefined {
  if (!line.startsWith(name)) return undefined;
  const rest = line.slice(name.length);
  if (rest !== "" && !/^\s/.test(rest)) return undefined; // "::progressive" is not "::progress"
  return rest.trim();
}

function parseJson(text: string): { value: unknown } | undefined {
  try {
    return { value: JSON.parse(text) };
  } catch {
    return undefined;
  }
}

/** The update if `text` is a JSON object whose known fields have the right types; unknown fields are
 * dropped. Anything else is undefined (and the line becomes a log line). */
function parseProgress(text: string): ProgressUpdate | undefined {
  const parsed = parseJson(text)?.value;
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return undefined;
  const fields = parsed as Record<string, unknown>;
  const update: ProgressUpdate = {};
  const { phase, percent, iteration, maxIterations, message } = fields;
  if (phase !== undefined) {
    if (!isShortString(phase, PHASE_MAX_CHARS)) return undefined;
    update.phase = phase;
  }
  if (percent !== undefined) {
    if (typeof percent !== "number" || !(percent >= 0 && percent <= 100)) return undefined;
    update.percent = percent;
  }
  if (iteration !== undefined) {
    if (!isCount(iteration)) return undefined;
    update.iteration = iteration;
  }
  if (maxIterations !== undefined) {
    if (!isCount(maxIterations)) return undefined;
    update.maxIterations = maxIterations;
  }
  if (message !== undefined) {
    if (!isShortString(message, MESSAGE_MAX_CHARS)) return undefined;
    update.message = message;
  }
  return update;
}

function isShortString(value: unknown, maxChars: number): value is string {
  return typeof value === "string" && value.length <= maxChars;
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/**
 * The last `limitBytes` bytes of output, as whole lines: the oldest lines are dropped as new ones come.
 * Only a single line longer than the limit is cut, keeping its end.
 */
class LogTail {
  private lines: { text: string; bytes: number }[] = [];
  /** Index of the oldest kept line; dropped lines are skipped, not shifted out one by one. */
  private first = 0;
  private bytes = 0;

  constructor(private readonly limitBytes: number) {}

  push(line: string): void {
    if (this.limitBytes <= 0) return;
    let text = `${line}\n`;
    let bytes = Buffer.byteLength(text);
    if (bytes > this.limitBytes) {
      text = lastBytes(text, this.limitBytes);
      bytes = Buffer.byteLength(text);
    }
    this.lines.push({ text, bytes });
    this.bytes += bytes;
    while (this.bytes > this.limitBytes) {
      this.bytes -= this.lines[this.first]?.bytes ?? 0;
      this.first++;
    }
    if (this.first > 1024 && this.first * 2 > this.lines.length) {
      this.lines = this.lines.slice(this.first);
      this.first = 0;
    }
  }

  toString(): string {
    let out = "";
    for (let i = this.first; i < this.lines.length; i++) out += this.lines[i]?.text ?? "";
    return out;
  }
}

/** The end of `text` in at most `limit` UTF-8 bytes, starting on a character boundary. */
function lastBytes(text: string, limit: number): string {
  const buf = Buffer.from(text);
  let start = buf.length - limit;
  // 0b10xxxxxx bytes continue a character: start after them, so the cut does not make a U+FFFD.
  while (start < buf.length && ((buf[start] ?? 0) & 0xc0) === 0x80) start++;
  return buf.subarray(start).toString("utf8");
}
