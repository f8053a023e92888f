/**
 * redis-server started on a configuration file (the shipped deploy/redis/*.conf), with only the port,
 * the bind address and the directory changed on the command line; and small helpers the persistence
 * tests share (running the built `oculus` binary, capturing log lines).
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { pino } from "pino";
import type { Logger } from "../../src/core/logger.js";
import { freePort } from "./redis-server.js";

export class ConfRedis {
  private constructor(
    readonly port: number,
    readonly dir: string,
    private child: ChildProcess | undefined,
  ) {}

  /**
   * `cwd`: where redis-server starts (a configuration's relative `dir` is resolved from there), and
   * then the configuration's `dir` is kept; by default a new temporary directory, given as `--dir`.
   */
  static async start(
    confFile: string,
    options: { cwd?: string; extraArgs?: string[] } = {},
  ): Promise<ConfRedis> {
    const port = await freePort();
    const cwd = options.cwd ?? mkdtempSync(path.join(tmpdir(), "oculus-conf-redis-"));
    const dirArgs = options.cwd ? [] : ["--dir", cwd];
    const args = [confFile, "--port", String(port), "--bind", "127.0.0.1", ...dirArgs, "--daemonize", "no"];
    const child = spawn("redis-server", [...args, ...(options.extraArgs ?? [])], { cwd, stdio: "ignore" });
    const server = new ConfRedis(port, cwd, child);
    child.once("exit", () => {
      server.child = undefined;
    });
    await waitForPing(port, () => server.child === undefined);
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  client(): Redis {
    const client = new Redis(this.port, "127.0.0.1", { maxRetriesPerRequest: 1 });
    client.on("error", () => undefined);
    return client;
  }

  async destroy(): Promise<void> {
    const child = this.child;
    if (child) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

async function waitForPing(port: number, exited: () => boolean): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (exited()) throw new Error(`redis-server on port ${port} exited at start`);
    const probe = new Redis(port, "127.0.0.1", {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    probe.on("error", () => undefined);
    try {
      await probe.connect();
      await probe.ping();
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not start`);
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      probe.disconnect();
    }
  }
}

const run = promisify(execFile);
const BIN = path.resolve("dist/src/cli/main.js");

/** Runs the built `oculus` binary (npm test builds it first) with only PATH and `env` in its environment. */
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

/** A pino logger whose JSON lines are kept in `lines` (as parsed objects). */
export function capturingLogger(): {
  logger: Logger;
  lines: { level: number; msg: string; [k: string]: unknown }[];
} {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => lines.push(JSON.parse(line)) });
  return { logger, lines };
}
