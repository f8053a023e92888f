/**
 * The doctor's view of a replicated Redis: which master it resolved, and what keeps it available.
 *
 * Sentinel: the master the sentinels name (and that it says role:master), each sentinel's answer to
 * SENTINEL CKQUORUM (can a failover be authorized?), the replicas they know of, and the master's
 * min-replicas-to-write. Cluster: cluster_state, and the master owning the queue's slot with its
 * replicas. A single server gets no topology checks. The same check shapes as persistence-checks.ts.
 */
import { Redis } from "ioredis";
import { parseRedisUrl, type RedisTarget } from "../core/redis-url.js";
import type { PersistenceCheck } from "./persistence-checks.js";
import { parseInfo, readConfig } from "./redis-admin.js";

/** `master`: a connection to the server the admin client resolved (the one holding the queue's keys). */
export async function checkTopology(url: string, master: Redis): Promise<PersistenceCheck[]> {
  const target = parseRedisUrl(url);
  if (target.topology === "standalone") return [];
  const role = parseInfo(await master.info("replication"));
  // The address connected to (in Sentinel mode `options` hold no address: the sentinels gave it).
  const address = `${master.stream.remoteAddress ?? master.options.host}:${master.stream.remotePort ?? master.options.port}`;
  const isMaster = role.get("role") === "master";
  const checks: PersistenceCheck[] = [
    {
      name: "master",
      status: isMaster ? "pass" : "fail",
      value: address,
      message: isMaster
        ? `the queue's keys are on ${address} (role:master, ${role.get("connected_slaves") ?? "0"} replica(s) connected)`
        : `${address} says role:${role.get("role")}: it takes no writes (a failover in progress?)`,
      fix: isMaster ? null : "wait for the failover to end, then run doctor again",
    },
  ];
  if (target.topology === "sentinel") checks.push(...(await sentinelChecks(target)));
  else checks.push(...(await clusterChecks(master)));
  checks.push(await minReplicasCheck(master));
  return checks;
}

async function sentinelChecks(target: RedisTarget): Promise<PersistenceCheck[]> {
  const name = target.masterName as string;
  const answers = await Promise.all(target.nodes.map((node) => askSentinel(target, node, name)));
  const reachable = answers.filter((a) => a.error === undefined);
  const quorumOk = reachable.filter((a) => a.ckquorum?.startsWith("OK"));
  const views = answers.map((a) =>
    a.error !== undefined ? `${a.address}: ${a.error}` : `${a.address}: ${a.ckquorum}`,
  );
  const replicas = Math.max(0, ...reachable.map((a) => a.replicas ?? 0));
  const quorum = reachable.find((a) => a.quorum !== undefined)?.quorum;
  return [
    {
      name: "sentinel-quorum",
      status: quorumOk.length === 0 ? "fail" : quorumOk.length < answers.length ? "warn" : "pass",
      value:
        quorum === undefined ? null : `quorum ${quorum}, ${reachable.length}/${answers.length} reachable`,
      message:
        quorumOk.length === 0
          ? `no sentinel can authorize a failover of "${name}": ${views.join("; ")}`
          : `SENTINEL CKQUORUM ${name}: ${views.join("; ")}`,
      fix:
        quorumOk.length === answers.length
          ? null
          : "run at least three sentinels on separate machines, all listed in REDIS_URL, with a quorum they can reach",
    },
    {
      name: "sentinel-replicas",
      status: replicas === 0 ? "fail" : "pass",
      value: replicas,
      message:
        replicas === 0
          ? `the sentinels know no replica of "${name}": a failover has nothing to promote`
          : `${replicas} replica(s) of "${name}" can be promoted`,
      fix: replicas === 0 ? "start a replica (replicaof <master> <port>) that the sentinels can see" : null,
    },
  ];
}

interface SentinelAnswer {
  address: string;
  error?: string;
  ckquorum?: string;
  quorum?: number;
  replicas?: number;
}

async function askSentinel(
  target: RedisTarget,
  node: { host: string; port: number },
  name: string,
): Promise<SentinelAnswer> {
  const address = `${node.host}:${node.port}`;
  const sentinel = new Redis({
    host: node.host,
    port: node.port,
    ...(target.sentinelUsername ? { username: target.sentinelUsername } : {}),
    ...(target.sentinelPassword ? { password: target.sentinelPassword } : {}),
    ...(target.tls ? { tls: {} } : {}),
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 3000,
    commandTimeout: 5000,
    retryStrategy: () => null,
  });
  sentinel.on("error", () => undefined);
  try {
    await sentinel.connect();
    const ckquorum = await (sentinel.call("SENTINEL", "CKQUORUM", name) as Promise<string>).catch(
      (err: Error) => err.message,
    );
    const master = pairs((await sentinel.call("SENTINEL", "MASTER", name)) as string[]);
    return {
      address,
      ckquorum,
      quorum: Number(master.get("quorum")),
      replicas: Number(master.get("num-slaves")),
    };
  } catch (err) {
    return { address, error: (err as Error).message };
  } finally {
    sentinel.disconnect();
  }
}

async function clusterChecks(master: Redis): Promise<PersistenceCheck[]> {
  const info = parseInfo((await master.call("CLUSTER", "INFO")) as string);
  const state = info.get("cluster_state") ?? "unknown";
  const replicas = Number(parseInfo(await master.info("replication")).get("connected_slaves") ?? 0);
  return [
    {
      name: "cluster-state",
      status: state === "ok" ? "pass" : "fail",
      value: state,
      message:
        state === "ok"
          ? `cluster_state:ok, ${info.get("cluster_known_nodes")} nodes, ${info.get("cluster_size")} masters`
          : `cluster_state:${state}: some slots are not served; the queue runs on PostgreSQL`,
      fix: state === "ok" ? null : "redis-cli --cluster check <node>, then fix the failed masters",
    },
    {
      name: "cluster-replicas",
      status: replicas === 0 ? "warn" : "pass",
      value: replicas,
      message:
        replicas === 0
          ? "the master of the queue's slot has no replica: losing it stops the fast path until it returns"
          : `the master of the queue's slot has ${replicas} replica(s) to fail over to`,
      fix:
        replicas === 0 ? "add a replica: redis-cli --cluster add-node <new> <master> --cluster-slave" : null,
    },
  ];
}

/**
 * min-replicas-to-write: 0 lets a master take writes no replica has (lost on a failover: the
 * reconciler rebuilds them from PostgreSQL); above 0 a master cut off from its replicas refuses
 * writes (the queue then runs on PostgreSQL). Either is safe for the queue; the value is reported.
 */
async function minReplicasCheck(master: Redis): Promise<PersistenceCheck> {
  const read = await readConfig(master, ["min-replicas-to-write", "min-replicas-max-lag"]);
  if (!read.ok) {
    return {
      name: "min-replicas-to-write",
      status: "pass",
      value: null,
      message: `not readable (${read.reason})`,
      fix: null,
    };
  }
  const min = Number(read.values.get("min-replicas-to-write") ?? 0);
  return {
    name: "min-replicas-to-write",
    status: "pass",
    value: min,
    message:
      min === 0
        ? "the master acknowledges writes no replica has yet: a failover may lose about the last second of index writes, which the reconciler restores from PostgreSQL"
        : `the master refuses writes with fewer than ${min} replica(s) within ${read.values.get("min-replicas-max-lag")} s: a master cut off from its replicas sends the queue to PostgreSQL`,
    fix: null,
  };
}

function pairs(flat: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) out.set(flat[i] as string, flat[i + 1] as string);
  return out;
}
