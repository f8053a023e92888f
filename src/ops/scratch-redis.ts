/**
 * A throw-away redis-server for restore tests: loopback only, a free port, a directory of its own, no
 * snapshots. Started on a copy of a backup, it either loads it (and answers) or exits, and its log
 * says why; `kill()` always ends it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createServer } from "node:net";
import path from "node:path";
import { Redis } from "ioredis";

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export class ScratchRedis {
  private exitCode: number | null | undefined;
  private readonly exited: Promise<void>;

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) =>
      child.once("exit", (code, signal) => {
        this.exitCode = code ?? (signal ? -1 : null);
        resolve();
      }),
    );
  }

  /**
   * Starts `redisServer` on `dir` with `args` added, and waits until the data is loaded (PING answers
   * and INFO says loading:0). Throws with the end of the server's log when it exits or takes longer
   * than `timeoutMs`; the process is gone when it throws.
   */
  static async start(options: {
    dir: string;
    args: string[];
    redisServer?: string;
    timeoutMs?: number;
  }): Promise<ScratchRedis> {
    const port = await freePort();
    const logfile = path.join(options.dir, "scratch-redis.log");
    const args = [
      ...["--port", String(port), "--bind", "127.0.0.1", "--dir", options.dir, "--save", ""],
      ...["--daemonize", "no", "--logfile", logfile, ...options.args],
    ];
    const child = spawn(options.redisServer ?? "redis-server", args, { stdio: "ignore" });
    const spawned = new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", reject);
    });
    await spawned.catch((err: NodeJS.ErrnoException) => {
      throw new Error(
        err.code === "ENOENT"
          ? `${options.redisServer ?? "redis-server"} is not installed or not on PATH (Debian: apt-get install redis-server)`
          : `cannot start redis-server: ${err.message}`,
      );
    });
    const server = new ScratchRedis(port, options.dir, child);
    try {
      await server.waitLoaded(options.timeoutMs ?? 120_000);
      return server;
    } catch (err) {
      await server.kill();
      throw err;
    }
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  client(): Redis {
    const client = new Redis(this.port, "127.0.0.1", {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      enableOfflineQueue: false,
    });
    client.on("error", () => undefined);
    return client;
  }

  private async waitLoaded(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.exitCode !== undefined) {
        throw new Error(
          `redis-server exited (code ${this.exitCode}) instead of loading: ${await this.logTail()}`,
        );
      }
      if (await this.loaded()) return;
      if (Date.now() > deadline) {
        throw new Error(`redis-server had not loaded after ${timeoutMs / 1000} s: ${await this.logTail()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  private async loaded(): Promise<boolean> {
    const probe = this.client();
    try {
      await probe.connect();
      // LOADING replies are errors; INFO answers during loading, so look at the field too.
      await probe.ping();
      return /^loading:0\r?$/m.test(await probe.info("persistence"));
    } catch {
      return false;
    } finally {
      probe.disconnect();
    }
  }

  /** The last lines of the server's log that say something went wrong (or the last lines). */
  async logTail(lines = 4): Promise<string> {
    const text = await readFile(path.join(this.dir, "scratch-redis.log"), "utf8").catch(() => "");
    const all = text.trim().split("\n");
    // "#" lines are Redis's warnings; its start-up advice (overcommit, THP) is not the reason it failed.
    const bad = all.filter((l) => / # /.test(l) && !/ # WARNING /.test(l));
    return (bad.length > 0 ? bad : all)
      .slice(-lines)
      .map((l) => l.replace(/^\d+:[A-Z] [^*#]*[*#] /, ""))
      .join(" | ");
  }

  /** SIGKILL and wait for the exit; safe to call twice. */
  async kill(): Promise<void> {
    if (this.exitCode === undefined) this.child.kill("SIGKILL");
    await this.exited;
  }
}
