/** Runs the external tools the operations commands use (redis-check-aof, redis-check-rdb, pg_dump). */
import { spawn } from "node:child_process";

export interface ToolRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** The tool is not installed (or not on PATH): the caller decides whether that is an error. */
export class ToolMissingError extends Error {
  constructor(readonly tool: string) {
    super(`${tool} is not installed or not on PATH`);
  }
}

/** Runs `tool` with `args`; resolves with its exit code and output (a non-zero exit is not an error). */
export function runTool(
  tool: string,
  args: string[],
  options: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<ToolRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(tool, args, {
      env: options.env ?? process.env,
      stdio: ["pipe", "pipe", "pipe"],
      timeout: options.timeoutMs ?? 600_000,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString("utf8");
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString("utf8");
    });
    child.once("error", (err: NodeJS.ErrnoException) => {
      reject(err.code === "ENOENT" ? new ToolMissingError(tool) : err);
    });
    child.once("close", (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
    child.stdin.on("error", () => undefined);
    child.stdin.end(options.input ?? "");
  });
}

/** The last non-empty lines of a tool's output, for an error message. */
export function lastLines(text: string, count = 3): string {
  return text
    .trim()
    .split("\n")
    .filter((l) => l.trim() !== "")
    .slice(-count)
    .map((l) => l.replace(/\s+/g, " ").trim())
    .join(" | ");
}
