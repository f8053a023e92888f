/** The `oculus` command as a user runs it: the built binary (npm test builds it first). */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const BIN = path.resolve("dist/src/cli/main.js");

/** Runs the built `oculus` binary with only PATH and `env` in its environment. */
export async function oculus(args: string[], env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await run("node", [BIN, ...args], {
      env: { PATH: process.env.PATH ?? "", OCULUS_LOG_LEVEL: "warn", ...env },
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

export interface OculusProcess {
  child: ChildProcess;
  /** stdout and stderr so far, interleaved as they arrived. */
  output(): string;
  /** The exit code once the process has exited and its pipes have closed (the output is complete). */
  exited: Promise<number | null>;
}

/** Starts the built `oculus` binary in the background, with only PATH and `env` in its environment. */
export function spawnOculus(args: string[], env: Record<string, string> = {}): OculusProcess {
  const child = spawn("node", [BIN, ...args], {
    env: { PATH: process.env.PATH ?? "", OCULUS_LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const append = (d: Buffer) => {
    out += d.toString();
  };
  child.stdout?.on("data", append);
  child.stderr?.on("data", append);
  // "close", not "exit": the output is complete only once the pipes have closed.
  const exited = new Promise<number | null>((resolve) =>
    child.once("close", (code, signal) => {
      if (signal) out += `\n(killed by ${signal})`;
      resolve(code);
    }),
  );
  return { child, output: () => out, exited };
}
