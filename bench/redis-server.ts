/**
 * A private redis-server for the benchmark: a free port, its own temporary directory, no persistence
 * (no RDB snapshots, no AOF), so that Redis' disk never takes part in the throughput figures.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";

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

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class PrivateRedis {
  private exited: Promise<void>;
  private readonly killOnExit = () => this.child.kill("SIGKILL");

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
    // Last resort: a benchmark that dies without reaching its cleanup still takes the server along.
    process.once("exit", this.killOnExit);
  }

  static async start(): Promise<PrivateRedis> {
    const port = await freePort();
    const dir = mkdtempSync(path.join(tmpdir(), "oculus-bench-redis-"));
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", ""];
    args.push("--appendonly", "no", "--daemonize", "no", "--logfile", path.join(dir, "redis.log"));
    const child = spawn("redis-server", args, { stdio: "ignore" });
    const server = new PrivateRedis(port, dir, child);
    const deadline = Date.now() + 15_000;
    for (;;) {
      const probe = server.client({ lazyConnect: true, retryStrategy: () => null });
      try {
        await probe.connect();
        await probe.ping();
        probe.disconnect();
        return server;
      } catch {
        probe.disconnect();
        if (Date.now() > deadline || child.exitCode !== null) {
          await server.stop();
          throw new Error(`redis-server on port ${port} did not start (see ${dir}/redis.log)`);
        }
        await sleep(50);
      }
    }
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** A plain client (FLUSHALL, INFO); the caller disconnects it. */
  client(extra: { lazyConnect?: boolean; retryStrategy?: () => null } = {}): Redis {
    const client = new Redis(this.port, "127.0.0.1", { maxRetriesPerRequest: 1, ...extra });
    client.on("error", () => undefined);
    return client;
  }

  async version(): Promise<string> {
    const client = this.client();
    try {
      const info = await client.info("server");
      return /redis_version:(\S+)/.exec(info)?.[1] ?? "unknown";
    } finally {
      client.disconnect();
    }
  }

  async flushAll(): Promise<void> {
    const client = this.client();
    try {
      await client.flushall();
    } finally {
      client.disconnect();
    }
  }

  /** SIGTERM, then SIGKILL after 5 s; removes the directory. Safe to call twice. */
  async stop(): Promise<void> {
    process.removeListener("exit", this.killOnExit);
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill("SIGTERM");
      const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
      await this.exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
