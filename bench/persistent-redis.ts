/**
 * A private redis-server with a chosen persistence (no AOF, AOF everysec, AOF always; never RDB
 * snapshots, so that they do not disturb the figures), in its own temporary directory, that can be
 * killed with SIGKILL and restarted on the same files: for bench/persistence.ts.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";

export type Persistence = "none" | "everysec" | "always";

async function freePort(): Promise<number> {
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

export class PersistentRedis {
  private child: ChildProcess | undefined;
  private readonly killOnExit = () => this.child?.kill("SIGKILL");

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly args: string[],
  ) {
    process.once("exit", this.killOnExit);
  }

  static async start(persistence: Persistence): Promise<PersistentRedis> {
    const port = await freePort();
    const dir = mkdtempSync(path.join(tmpdir(), "oculus-bench-aof-"));
    const aof =
      persistence === "none" ? ["--appendonly", "no"] : ["--appendonly", "yes", "--appendfsync", persistence];
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", ...aof];
    args.push("--daemonize", "no", "--logfile", path.join(dir, "redis.log"));
    const server = new PersistentRedis(port, dir, args);
    await server.restart();
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

  /** Starts the server on its directory (loading its AOF); resolves once it answers PING. */
  async restart(): Promise<void> {
    if (this.child) throw new Error("redis-server is already running");
    const child = spawn("redis-server", this.args, { stdio: "ignore" });
    this.child = child;
    child.once("exit", () => {
      if (this.child === child) this.child = undefined;
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      const probe = new Redis(this.port, "127.0.0.1", {
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
        if (Date.now() > deadline || !this.child) {
          throw new Error(`redis-server on port ${this.port} did not start (see ${this.dir}/redis.log)`);
        }
        await new Promise((r) => setTimeout(r, 50));
      } finally {
        probe.disconnect();
      }
    }
  }

  async kill9(): Promise<void> {
    const child = this.child;
    if (!child) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
    this.child = undefined;
  }

  /** Kills the server and removes its directory. */
  async destroy(): Promise<void> {
    process.removeListener("exit", this.killOnExit);
    await this.kill9();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
