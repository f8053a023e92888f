/**
 * redis-server started on a configuration file (the shipped deploy/redis/*.conf), with only the port,
 * the bind address and the directory changed on the command line; and a logger whose lines the
 * persistence tests look at.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pino } from "pino";
import type { Logger } from "../../src/core/logger.js";
import { freePort, RedisProcess } from "../../src/ops/scratch-redis.js";

export class ConfRedis extends RedisProcess {
  /**
   * `cwd`: where redis-server starts (a configuration's relative `dir` is resolved from there), and
   * then the configuration's `dir` is kept; by default a new temporary directory, given as `--dir`.
   * `destroy()` removes that directory.
   */
  static async start(
    confFile: string,
    options: { cwd?: string; extraArgs?: string[] } = {},
  ): Promise<ConfRedis> {
    const port = await freePort();
    const cwd = options.cwd ?? mkdtempSync(path.join(tmpdir(), "oculus-conf-redis-"));
    const dirArgs = options.cwd ? [] : ["--dir", cwd];
    const args = [confFile, "--port", String(port), "--bind", "127.0.0.1", ...dirArgs, "--daemonize", "no"];
    const server = new ConfRedis(port, cwd, {
      args: [...args, ...(options.extraArgs ?? [])],
      cwd,
      timeoutMs: 15_000,
    });
    await server.restart();
    return server;
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
