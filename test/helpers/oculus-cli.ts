/** The `oculus` command as a user runs it: the built binary (npm test builds it first). */
import { execFile } from "node:child_process";
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
