/**
 * Private redis-server processes: loopback only, a free port, a directory of their own.
 *
 * `RedisProcess` is one such server that can be killed and started again on the same files; the
 * tests and the benchmarks build theirs on it. `ScratchRedis` is the throw-away server of restore
 * tests (`oculus backup verify`): no snapshots; started on a copy of a backup, it either loads it
 * (and answers) or exits, and its log says why; `kill()` always ends it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer } from "node:net";
import path from "node:path";
import { Redis, type RedisOptions } from "ioredis";

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

/** One try, no queueing, no reconnecting: for probes, and for callers that must see a failure at once. */
const ONE_SHOT: RedisOptions = {
  lazyConnect: true,
  maxRetriesPerRequest: 0,
  retryStrategy: () => null,
  enableOfflineQueue: false,
};

export interface RedisProcessOptions {
  /** The whole redis-server command line (see `privateServerArgs`). */
  args: string[];
  /** Where redis-server starts: a configuration file's relative paths are resolved from there. */
  cwd?: string;
  redisServer?: string;
  /** How long a start may take, loading the data included. */
  timeoutMs: number;
  /** The server's log file, quoted when it fails to start. */
  logfile?: string;
  /** SIGKILL the server when this Node process exits: a benchmark that dies before its cleanup. */
  killOnExit?: boolean;
}

/**
 * A private server on `dir`, no RDB snapshots (they would write at times of their own), in the
 * foreground (so that it is our child), logging to `logfile`; options added after these win.
 */
export function privateServerArgs(port: number, dir: string, logfile: string): string[] {
  return [
    ...["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", ""],
    ...["--daemonize", "no", "--logfile", logfile],
  ];
}

type RedisProcessClass<T> = new (port: number, dir: string, options: RedisProcessOptions) => T;

export class RedisProcess {
  private child: ChildProcess | undefined;
  private readonly killOnExit = () => this.child?.kill("SIGKILL");

  constructor(
    readonly port: number,
    readonly dir: string,
    private readonly options: RedisProcessOptions,
  ) {}

  /**
   * Starts a private server (`privateServerArgs`, log `logName` in `dir`, then `args`) on a free
   * port; resolves once it has loaded its data.
   */
  static async startIn<T extends RedisProcess>(
    this: RedisProcessClass<T>,
    dir: string,
    options: Omit<RedisProcessOptions, "logfile"> & { logName?: string },
  ): Promise<T> {
    const port = await freePort();
    const logfile = path.join(dir, options.logName ?? "redis.log");
    const args = [...privateServerArgs(port, dir, logfile), ...options.args];
    const server = new this(port, dir, { ...options, args, logfile });
    await server.restart();
    return server;
  }

  /** The server process is running (started, not yet exited). */
  get running(): boolean {
    return this.child !== undefined;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** A client for poking at the server directly; the caller disconnects it. */
  client(extra: RedisOptions = {}): Redis {
    const client = new Redis(this.port, "127.0.0.1", { maxRetriesPerRequest: 1, ...extra });
    client.on("error", () => undefined);
    return client;
  }

  /**
   * (Re)starts the server on its port and directory, and waits until the data is loaded (PING
   * answers and INFO says loading:0). Throws with the end of the server's log when it exits or takes
   * longer than `timeoutMs`; the process is gone when it throws.
   */
  async restart(): Promise<void> {
    if (this.child) throw new Error("redis-server is already running");
    const child = await this.spawn();
    try {
      await this.waitLoaded(child);
    } catch (err) {
      await this.kill();
      throw err;
    }
  }

  private async spawn(): Promise<ChildProcess> {
    const command = this.options.redisServer ?? "redis-server";
    const child = spawn(command, this.options.args, { cwd: this.options.cwd, stdio: "ignore" });
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", reject);
    }).catch((err: NodeJS.ErrnoException) => {
      throw new Error(
        err.code === "ENOENT"
          ? `${command} is not installed or not on PATH (Debian: apt-get install redis-server)`
          : `cannot start redis-server: ${err.message}`,
      );
    });
    this.child = child;
    if (this.options.killOnExit) process.once("exit", this.killOnExit);
    child.once("exit", () => {
      if (this.child === child) this.child = undefined;
      process.removeListener("exit", this.killOnExit);
    });
    return child;
  }

  private async waitLoaded(child: ChildProcess): Promise<void> {
    const timeoutMs = this.options.timeoutMs;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(
          `redis-server exited (code ${child.exitCode ?? -1}) instead of loading: ${await this.logTail()}`,
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
    const probe = this.client(ONE_SHOT);
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
    if (!this.options.logfile) return "";
    const text = await readFile(this.options.logfile, "utf8").catch(() => "");
    const all = text.trim().split("\n");
    // "#" lines are Redis's warnings; its start-up advice (overcommit, THP) is not the reason it failed.
    const bad = all.filter((l) => / # /.test(l) && !/ # WARNING /.test(l));
    return (bad.length > 0 ? bad : all)
      .slice(-lines)
      .map((l) => l.replace(/^\d+:[A-Z] [^*#]*[*#] /, ""))
      .join(" | ");
  }

  /** kill -9 (no shutdown, no final fsync), and wait for the exit; safe to call twice. */
  async kill(): Promise<void> {
    await this.signal("SIGKILL");
  }

  /** A clean shutdown (SIGTERM: Redis writes what it holds, then exits); SIGKILL after `killAfterMs`. */
  async stop(killAfterMs?: number): Promise<void> {
    const timer =
      killAfterMs === undefined ? undefined : setTimeout(() => this.child?.kill("SIGKILL"), killAfterMs);
    await this.signal("SIGTERM");
    clearTimeout(timer);
  }

  /** Kills the server and removes its directory. */
  async destroy(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill(sig);
    await exited;
  }
}

export class ScratchRedis extends RedisProcess {
  /**
   * Starts `redisServer` on `dir` with `args` added, and waits until the data is loaded. Throws with
   * the end of the server's log when it exits or takes longer than `timeoutMs`; the process is gone
   * when it throws.
   */
  static async start(options: {
    dir: string;
    args: string[];
    redisServer?: string;
    timeoutMs?: number;
  }): Promise<ScratchRedis> {
    return ScratchRedis.startIn(options.dir, {
      args: options.args,
      redisServer: options.redisServer,
      timeoutMs: options.timeoutMs ?? 120_000,
      logName: "scratch-redis.log",
    });
  }

  /** A client that fails at once rather than wait for a server that is gone; connect() it first. */
  override client(): Redis {
    return super.client(ONE_SHOT);
  }
}
