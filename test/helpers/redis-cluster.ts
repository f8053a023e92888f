/**
 * A private Redis Cluster for tests: three masters and three replicas on free ports, made with
 * `redis-cli --cluster create`, with a short cluster-node-timeout so that a killed master's replica
 * takes over in a few seconds. `url` is the redis-cluster:// URL of it.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { eventually } from "./queue.js";
import { RedisServer } from "./redis-server.js";

const run = promisify(execFile);

export class RedisClusterGroup {
  private constructor(readonly nodes: RedisServer[]) {}

  static async start(masters = 3, replicasPerMaster = 1): Promise<RedisClusterGroup> {
    const count = masters * (1 + replicasPerMaster);
    const nodes: RedisServer[] = [];
    for (let i = 0; i < count; i++) {
      nodes.push(
        await RedisServer.start({
          appendfsync: "everysec",
          extraArgs: [
            ...["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
            ...["--cluster-node-timeout", "1000"],
            // A replica may take over however long it was cut off (the test kills masters at will).
            ...["--cluster-replica-validity-factor", "0"],
          ],
        }),
      );
    }
    const group = new RedisClusterGroup(nodes);
    await run(
      "redis-cli",
      [
        "--cluster",
        "create",
        ...nodes.map((n) => `127.0.0.1:${n.port}`),
        "--cluster-replicas",
        String(replicasPerMaster),
        "--cluster-yes",
      ],
      { timeout: 60_000 },
    );
    await group.waitHealthy(30_000);
    return group;
  }

  get url(): string {
    return `redis-cluster://${this.nodes
      .slice(0, 3)
      .map((n) => `127.0.0.1:${n.port}`)
      .join(",")}`;
  }

  private async ask<T>(node: RedisServer, op: (client: Redis) => Promise<T>): Promise<T> {
    const client = node.client({ maxRetriesPerRequest: 0, retryStrategy: () => null });
    try {
      return await op(client);
    } finally {
      client.disconnect();
    }
  }

  /** Every live node says cluster_state:ok and names the same master for `key` (when given). */
  async waitHealthy(timeoutMs: number, key?: string, except?: number): Promise<void> {
    await eventually(async () => {
      const live = this.nodes.filter((n) => !this.killed.has(n.port));
      const answers = await Promise.all(
        live.map((n) =>
          this.ask(n, async (c) => {
            const ok = /cluster_state:ok/.test((await c.call("CLUSTER", "INFO")) as string);
            return { ok, master: key ? await masterOf(c, key) : 0 };
          }).catch(() => ({ ok: false, master: -1 })),
        ),
      );
      const first = answers[0]?.master;
      return answers.every((a) => a.ok && a.master === first && a.master !== except);
    }, timeoutMs);
  }

  private readonly killed = new Map<number, RedisServer>();

  /** The port of the master that owns `key`'s slot, as a live node sees it. */
  async masterPort(key: string): Promise<number> {
    const live = this.nodes.find((n) => !this.killed.has(n.port)) as RedisServer;
    return this.ask(live, (c) => masterOf(c, key));
  }

  /** kill -9 of the node on `port`. */
  async kill9(port: number): Promise<void> {
    const node = this.nodes.find((n) => n.port === port);
    if (!node) throw new Error(`no node on port ${port}`);
    this.killed.set(port, node);
    await node.kill9();
  }

  /** Subscribers of each channel, summed over the live nodes (PUBSUB NUMSUB is per node). */
  async subscribers(channels: string[]): Promise<number[]> {
    const live = this.nodes.filter((n) => !this.killed.has(n.port));
    const perNode = await Promise.all(
      live.map((n) => this.ask(n, (c) => c.call("PUBSUB", "NUMSUB", ...channels) as Promise<unknown[]>)),
    );
    return channels.map((_, i) => perNode.reduce((sum, flat) => sum + Number(flat[2 * i + 1]), 0));
  }

  /** A plain client of the node on `port` (all keys of one hash tag are there). */
  client(port: number): Redis {
    const client = new Redis(port, "127.0.0.1", { maxRetriesPerRequest: 1 });
    client.on("error", () => undefined);
    return client;
  }

  async destroy(): Promise<void> {
    for (const node of this.nodes) await node.destroy().catch(() => undefined);
  }
}

/** The master port of `key`'s slot by CLUSTER SLOTS, as the node `client` sees it. */
async function masterOf(client: Redis, key: string): Promise<number> {
  const slot = Number(await client.call("CLUSTER", "KEYSLOT", key));
  const ranges = (await client.call("CLUSTER", "SLOTS")) as [number, number, [string, number]][];
  const range = ranges.find(([from, to]) => slot >= from && slot <= to);
  if (!range) throw new Error(`no node serves slot ${slot}`);
  return Number(range[2][1]);
}
