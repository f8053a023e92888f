/**
 * A private Redis Sentinel group for tests: one master, one replica and three sentinels, each on a
 * free port with its own directory, with short down-after-milliseconds and failover-timeout so that a
 * killed master is replaced in a few seconds. `url` is the redis-sentinel:// URL of the group.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { freePort } from "../../src/ops/scratch-redis.js";
import { eventually } from "./queue.js";
import { RedisServer } from "./redis-server.js";

/** One redis-server --sentinel process (sentinels rewrite their configuration file: it is theirs). */
export class SentinelProcess {
  private child: ChildProcess | undefined;

  private constructor(
    readonly port: number,
    readonly dir: string,
  ) {}

  static async start(masterName: string, masterPort: number, quorum: number): Promise<SentinelProcess> {
    const dir = mkdtempSync(path.join(tmpdir(), "oculus-sentinel-"));
    const port = await freePort();
    writeFileSync(
      path.join(dir, "sentinel.conf"),
      [
        `port ${port}`,
        "bind 127.0.0.1",
        "daemonize no",
        `dir ${dir}`,
        `logfile ${path.join(dir, "sentinel.log")}`,
        `sentinel monitor ${masterName} 127.0.0.1 ${masterPort} ${quorum}`,
        `sentinel down-after-milliseconds ${masterName} 1000`,
        `sentinel failover-timeout ${masterName} 5000`,
        `sentinel parallel-syncs ${masterName} 1`,
        "",
      ].join("\n"),
    );
    const sentinel = new SentinelProcess(port, dir);
    sentinel.child = spawn("redis-server", [path.join(dir, "sentinel.conf"), "--sentinel"], {
      stdio: "ignore",
    });
    await eventually(async () => {
      const client = sentinel.client();
      try {
        return (await client.ping()) === "PONG";
      } finally {
        client.disconnect();
      }
    }, 15_000);
    return sentinel;
  }

  client(): Redis {
    const client = new Redis(this.port, "127.0.0.1", {
      lazyConnect: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    client.on("error", () => undefined);
    return client;
  }

  async destroy(): Promise<void> {
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export class RedisSentinelGroup {
  private constructor(
    readonly masterName: string,
    /** The servers by port: the first master and its replica. */
    readonly servers: Map<number, RedisServer>,
    readonly sentinels: SentinelProcess[],
  ) {}

  /** Starts the master (AOF everysec), a replica of it, and three sentinels (quorum 2); waits until
   * every sentinel sees the replica and the other sentinels. */
  static async start(masterName = "oculusmaster"): Promise<RedisSentinelGroup> {
    const master = await RedisServer.start({ appendfsync: "everysec" });
    const replica = await RedisServer.start({
      appendfsync: "everysec",
      extraArgs: ["--replicaof", "127.0.0.1", String(master.port)],
    });
    const sentinels: SentinelProcess[] = [];
    for (let i = 0; i < 3; i++) sentinels.push(await SentinelProcess.start(masterName, master.port, 2));
    const group = new RedisSentinelGroup(
      masterName,
      new Map([
        [master.port, master],
        [replica.port, replica],
      ]),
      sentinels,
    );
    await group.waitSettled(30_000);
    return group;
  }

  get url(): string {
    return `redis-sentinel://${this.sentinels.map((s) => `127.0.0.1:${s.port}`).join(",")}#${this.masterName}`;
  }

  /** What a sentinel reports: the master's port, its replicas and the other sentinels. */
  async view(sentinel: SentinelProcess): Promise<{ masterPort: number; replicas: number; others: number }> {
    const client = sentinel.client();
    try {
      const flat = (await client.call("SENTINEL", "MASTER", this.masterName)) as string[];
      const m = new Map<string, string>();
      for (let i = 0; i + 1 < flat.length; i += 2) m.set(flat[i] as string, flat[i + 1] as string);
      return {
        masterPort: Number(m.get("port")),
        replicas: Number(m.get("num-slaves")),
        others: Number(m.get("num-other-sentinels")),
      };
    } finally {
      client.disconnect();
    }
  }

  /**
   * Every sentinel agrees on the master (one other than `except`: after a failover) and sees a
   * replica and the two other sentinels; returns the master's port.
   */
  async waitSettled(timeoutMs: number, except?: number): Promise<number> {
    return eventually(async () => {
      const views = await Promise.all(this.sentinels.map((s) => this.view(s)));
      const port = views[0]?.masterPort;
      const agreed = views.every((v) => v.masterPort === port && v.others >= 2 && v.masterPort !== except);
      return agreed && views.every((v) => v.replicas >= 1) ? port : undefined;
    }, timeoutMs);
  }

  /** The master's port as the sentinels name it now. */
  async masterPort(): Promise<number> {
    return (await this.view(this.sentinels[0] as SentinelProcess)).masterPort;
  }

  async destroy(): Promise<void> {
    for (const s of this.sentinels) await s.destroy().catch(() => undefined);
    for (const server of this.servers.values()) await server.destroy().catch(() => undefined);
  }
}
