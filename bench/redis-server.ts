/**
 * A private redis-server for the benchmark: a free port, its own temporary directory, no persistence
 * (no RDB snapshots, no AOF), so that Redis' disk never takes part in the throughput figures.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { RedisProcess } from "../src/ops/scratch-redis.js";

export class PrivateRedis extends RedisProcess {
  static async start(): Promise<PrivateRedis> {
    const dir = mkdtempSync(path.join(tmpdir(), "oculus-bench-redis-"));
    // killOnExit: a benchmark that dies without reaching its cleanup still takes the server along.
    const options = { args: ["--appendonly", "no"], timeoutMs: 15_000, killOnExit: true };
    return PrivateRedis.startIn(dir, options).catch((err) => {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    });
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
    await flushRedis(this);
  }

  /** SIGTERM, then SIGKILL after 5 s; removes the directory. Safe to call twice. */
  override async stop(): Promise<void> {
    await super.stop(5000);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Empties a benchmark's Redis server (any of them: this one, bench/persistent-redis.ts). */
export async function flushRedis(server: RedisProcess): Promise<void> {
  const client = server.client();
  try {
    await client.flushall();
  } finally {
    client.disconnect();
  }
}
