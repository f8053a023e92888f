/**
 * Private redis-server processes for tests: each on a free port with its own data directory, so a
 * test can kill -9 it and restart it on the same AOF, or stop it for good.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { freePort } from "../../src/ops/scratch-redis.js";

export interface RedisServerOptions {
  /** AOF on (default) with appendfsync everysec; false for no persistence at all. */
  appendonly?: boolean;
  appendfsync?: "always" | "everysec" | "no";
  extraArgs?: string[];
}

// One free-port helper for the product (scratch servers of `oculus backup verify`) and the tests.
export { freePort };

export class RedisServer {
  private child: ChildProcess | undefined;

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly args: string[],
  ) {}

  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    const port = await freePort();
    const dir = mkdtempSync(path.join(tmpdir(), "oculus-redis-"));
    const aof = options.appendonly ?? true;
    const args = [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      aof ? "yes" : "no",
      "--appendfsync",
      options.appendfsync ?? "everysec",
      "--daemonize",
      "no",
      "--logfile",
      path.join(dir, "redis.log"),
      ...(options.extraArgs ?? []),
    ];
    const server = new RedisServer(port, dir, args);
    await server.restart();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** (Re)starts the server on the same port and data directory; resolves once it answers PING. */
  async restart(): Promise<void> {
    if (this.child) throw new Error("redis-server is already running");
    const child = spawn("redis-server", this.args, { stdio: "ignore" });
    this.child = child;
    child.once("exit", () => {
      if (this.child === child) this.child = undefined;
    });
    const deadline = Date.now() + 15_000;
    for (;;) {
      const probe = new Redis(this.port, "127.0.0.1", {
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      probe.on("error", () => undefined);
      try {
        await probe.connect();
        // Wait until the AOF is loaded: LOADING replies are errors.
        await probe.ping();
        probe.disconnect();
        return;
      } catch {
        probe.disconnect();
        if (Date.now() > deadline)
          throw new Error(`redis-server on port ${this.port} did not start (see ${this.dir}/redis.log)`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** kill -9: no shutdown, no final fsync. */
  async kill9(): Promise<void> {
    await this.signal("SIGKILL");
  }

  /** A clean shutdown (SIGTERM: Redis writes what it holds, then exits). */
  async stop(): Promise<void> {
    await this.signal("SIGTERM");
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill(sig);
    await exited;
    this.child = undefined;
  }

  /** A client for poking at the server directly (FLUSHALL, ZADD of a stale id, ...). */
  client(): Redis {
    const client = new Redis(this.port, "127.0.0.1", { maxRetriesPerRequest: 1 });
    client.on("error", () => undefined);
    return client;
  }

  async destroy(): Promise<void> {
    await this.kill9();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
