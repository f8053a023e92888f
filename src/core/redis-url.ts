/**
 * REDIS_URL, parsed once. It names one of three topologies:
 *
 *   redis://[[user]:password@]host[:port][/db]                    one server   (rediss:// for TLS)
 *   redis-sentinel://[[user]:password@]h1:p1[,h2:p2...][/db]#name  Sentinel    (rediss-sentinel://)
 *   redis-cluster://[[user]:password@]h1:p1[,h2:p2...]             Cluster     (rediss-cluster://)
 *
 * (the Sentinel form is the one Lettuce and Spring use; a Sentinel port defaults to 26379). A malformed
 * URL is a RedisUrlError (a ConfigError: exit 2 from the CLI) that names what is wrong. Credentials
 * authenticate to the data nodes; sentinels with a password of their own take `?sentinelPassword=`
 * (and `sentinelUsername`). Also here: the key prefix rule of a Cluster (a hash tag).
 */
import { ConfigError } from "./errors.js";

export type RedisTopology = "standalone" | "sentinel" | "cluster";

export interface RedisNode {
  host: string;
  port: number;
}

export interface RedisTarget {
  topology: RedisTopology;
  tls: boolean;
  /** The server (standalone), the sentinels (sentinel) or the seed nodes (cluster). */
  nodes: RedisNode[];
  username: string | undefined;
  password: string | undefined;
  /** The database number (always 0 on a cluster). */
  db: number;
  /** The Sentinel master group name (sentinel only). */
  masterName: string | undefined;
  sentinelUsername: string | undefined;
  sentinelPassword: string | undefined;
}

const SCHEMES: Record<string, { topology: RedisTopology; tls: boolean; defaultPort: number }> = {
  redis: { topology: "standalone", tls: false, defaultPort: 6379 },
  rediss: { topology: "standalone", tls: true, defaultPort: 6379 },
  "redis-sentinel": { topology: "sentinel", tls: false, defaultPort: 26379 },
  "rediss-sentinel": { topology: "sentinel", tls: true, defaultPort: 26379 },
  "redis-cluster": { topology: "cluster", tls: false, defaultPort: 6379 },
  "rediss-cluster": { topology: "cluster", tls: true, defaultPort: 6379 },
};

const SCHEME_LIST = Object.keys(SCHEMES)
  .map((s) => `${s}://`)
  .join(", ");

/** A malformed REDIS_URL: the message says what is wrong and shows the expected form. */
export class RedisUrlError extends ConfigError {
  constructor(readonly reason: string) {
    super(`invalid REDIS_URL (--redis-url): ${reason}`, { setting: "redisUrl" });
  }
}

const FORMS: Record<RedisTopology, string> = {
  standalone: "redis://[[user]:password@]host[:port][/db]",
  sentinel: "redis-sentinel://[[user]:password@]host1:port1[,host2:port2,...][/db]#masterName",
  cluster: "redis-cluster://[[user]:password@]host1:port1[,host2:port2,...]",
};

/** Parses a REDIS_URL of any of the three forms; throws a RedisUrlError naming what is wrong. */
export function parseRedisUrl(url: string): RedisTarget {
  const schemeMatch = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/s.exec(url.trim());
  if (!schemeMatch) throw new RedisUrlError(`not a URL (expected one of ${SCHEME_LIST})`);
  const scheme = (schemeMatch[1] as string).toLowerCase();
  const kind = SCHEMES[scheme];
  if (!kind) throw new RedisUrlError(`unknown scheme "${scheme}://" (expected one of ${SCHEME_LIST})`);
  const form = FORMS[kind.topology];
  let rest = schemeMatch[2] as string;

  let fragment: string | undefined;
  const hash = rest.indexOf("#");
  if (hash >= 0) {
    fragment = decode(rest.slice(hash + 1), "master name");
    rest = rest.slice(0, hash);
  }
  let query = "";
  const question = rest.indexOf("?");
  if (question >= 0) {
    query = rest.slice(question + 1);
    rest = rest.slice(0, question);
  }
  let path = "";
  const slash = rest.indexOf("/");
  if (slash >= 0) {
    path = rest.slice(slash + 1);
    rest = rest.slice(0, slash);
  }
  let username: string | undefined;
  let password: string | undefined;
  const at = rest.lastIndexOf("@");
  if (at >= 0) {
    const userinfo = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = userinfo.indexOf(":");
    const user = colon >= 0 ? userinfo.slice(0, colon) : userinfo;
    const pass = colon >= 0 ? userinfo.slice(colon + 1) : undefined;
    username = user === "" ? undefined : decode(user, "user name");
    password = pass === undefined || pass === "" ? undefined : decode(pass, "password");
  }

  const nodes = parseHosts(rest, kind.defaultPort, form);
  const db = parseDb(path, kind.topology, form);
  const params = new URLSearchParams(query);

  if (kind.topology === "sentinel") {
    if (!fragment) {
      throw new RedisUrlError(`a Sentinel URL needs the master group name after "#" (${form})`);
    }
  } else if (fragment !== undefined) {
    throw new RedisUrlError(`"#${fragment}" (a master name) only belongs in a redis-sentinel:// URL`);
  }
  if (kind.topology === "standalone" && nodes.length > 1) {
    throw new RedisUrlError(
      `${nodes.length} hosts in a ${scheme}:// URL: use redis-sentinel:// (with #masterName) or redis-cluster:// for several nodes`,
    );
  }
  return {
    topology: kind.topology,
    tls: kind.tls,
    nodes,
    username,
    password,
    db,
    masterName: kind.topology === "sentinel" ? fragment : undefined,
    sentinelUsername: params.get("sentinelUsername") ?? undefined,
    sentinelPassword: params.get("sentinelPassword") ?? undefined,
  };
}

function decode(text: string, what: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new RedisUrlError(`the ${what} is not valid percent-encoding`);
  }
}

function parseHosts(text: string, defaultPort: number, form: string): RedisNode[] {
  if (text === "") throw new RedisUrlError(`no host (${form})`);
  return text.split(",").map((part, i) => {
    if (part === "") throw new RedisUrlError(`host ${i + 1} is empty (a stray ","?) (${form})`);
    // [::1]:6379, or host:port, or host.
    const m = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]+)(?::(.*))?$/.exec(part);
    if (!m) throw new RedisUrlError(`host ${i + 1} "${part}" is not host[:port] (${form})`);
    const host = (m[1] as string).replace(/^\[|\]$/g, "");
    const portText = m[2];
    if (portText === undefined) return { host, port: defaultPort };
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw new RedisUrlError(`host ${i + 1} "${part}": the port must be a number from 1 to 65535`);
    }
    return { host, port: Number(portText) };
  });
}

function parseDb(path: string, topology: RedisTopology, form: string): number {
  if (path === "") return 0;
  if (!/^\d{1,5}$/.test(path)) {
    throw new RedisUrlError(`the database "/${path}" must be a number (${form})`);
  }
  const db = Number(path);
  if (topology === "cluster" && db !== 0) {
    throw new RedisUrlError(`a Redis Cluster has only database 0, not /${db}`);
  }
  return db;
}

/** A URL's description for logs and reports: topology and nodes, never the password. */
export function describeRedisTarget(target: RedisTarget): string {
  const nodes = target.nodes.map((n) => `${n.host.includes(":") ? `[${n.host}]` : n.host}:${n.port}`);
  const tls = target.tls ? " (TLS)" : "";
  if (target.topology === "sentinel") {
    return `Sentinel master "${target.masterName}" via ${nodes.join(",")}${tls}`;
  }
  if (target.topology === "cluster") return `Cluster via ${nodes.join(",")}${tls}`;
  return `${nodes.join(",")}${target.db ? `/${target.db}` : ""}${tls}`;
}

/**
 * The hash tag rule of Redis Cluster: a key's slot is computed from the text between the first "{"
 * and the next "}" when that text is not empty. A prefix that carries one puts every key of the queue
 * in one slot, so each Lua script's keys are on one node.
 */
export function hashTagOf(prefix: string): string | undefined {
  const open = prefix.indexOf("{");
  if (open < 0) return undefined;
  const close = prefix.indexOf("}", open + 1);
  if (close < 0 || close === open + 1) return undefined;
  return prefix.slice(open + 1, close);
}

/** The default key prefix: `oculus` on one server or Sentinel, `{oculus}` on a Cluster. */
export function defaultPrefix(topology: RedisTopology | undefined): string {
  return topology === "cluster" ? "{oculus}" : "oculus";
}

/** On a Cluster the prefix must carry a hash tag; throws a ConfigError that gives the fix. */
export function checkPrefixForTopology(prefix: string, topology: RedisTopology | undefined): void {
  if (topology !== "cluster" || hashTagOf(prefix) !== undefined) return;
  throw new ConfigError(
    `invalid prefix "${prefix}" (--prefix / OCULUS_PREFIX) for Redis Cluster: it must carry a hash tag so that every key of the queue is in one slot; use "{${prefix.replace(/[{}]/g, "") || "oculus"}}"`,
    { setting: "prefix" },
  );
}
