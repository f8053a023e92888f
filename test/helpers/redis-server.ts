/**
 * Private redis-server processes for tests: each on a free port with its own data directory, so a
 * test can kill -9 it and restart it on the same AOF, or stop it for good.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { RedisProcess } from "../../src/ops/scratch-redis.js";

export interface RedisServerOptions {
  /** AOF on (default) with appendfsync everysec; false for no persistence at all. */
  appendonly?: boolean;
  appendfsync?: "always" | "everysec" | "no";
  extraArgs?: string[];
}

export class RedisServer extends RedisProcess {
  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    const dir = mkdtempSync(path.join(tmpdir(), "oculus-redis-"));
    const args = [
      ...["--appendonly", (options.appendonly ?? true) ? "yes" : "no"],
      ...["--appendfsync", options.appendfsync ?? "everysec", ...(options.extraArgs ?? [])],
    ];
    return RedisServer.startIn(dir, { args, timeoutMs: 15_000 });
  }

  /** kill -9: no shutdown, no final fsync. */
  async kill9(): Promise<void> {
    await this.kill();
  }
}
