/**
 * Which proxies to believe about the client's address (Fastify's `trustProxy`). Behind a load
 * balancer every request comes from the balancer's address; trusting it makes `request.ip` (the
 * rate limit's key without auth) the client's address from X-Forwarded-For. Off by default: without
 * a proxy in front, any client could pick its own address with that header.
 */
import { isIP } from "node:net";
import { ConfigError } from "../core/errors.js";

/** false: ignore X-Forwarded-For; true: trust every hop; n: trust n hops; else trusted addresses/CIDRs. */
export type TrustProxy = boolean | number | string[];

const VARIABLE = "OCULUS_TRUST_PROXY";

/**
 * OCULUS_TRUST_PROXY: unset or `false` (off), `true` (trust all), a positive number of proxy hops, or
 * comma-separated IP addresses and CIDR ranges of the proxies (`10.0.0.0/8,192.168.1.7`).
 */
export function trustProxyFromEnv(env: NodeJS.ProcessEnv = process.env): TrustProxy {
  const raw = env[VARIABLE]?.trim();
  if (!raw || raw.toLowerCase() === "false") return false;
  if (raw.toLowerCase() === "true") return true;
  if (/^\d+$/.test(raw)) return hopCount(raw);
  const entries = raw
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0);
  const bad = entries.find((entry) => !isAddressOrRange(entry));
  if (bad !== undefined || entries.length === 0) {
    throw new ConfigError(
      `invalid ${VARIABLE}: "${bad ?? raw}" is not an IP address or CIDR range ` +
        "(the value is true, false, a number of proxy hops, or comma-separated addresses and ranges)",
    );
  }
  return entries;
}

/** What Fastify's `trustProxy` option takes. */
export type FastifyTrustProxy = boolean | string[] | ((address: string, hop: number) => boolean);

/**
 * The setting as Fastify's option. Fastify 5.12 ignores a bare hop count (it then trusts no proxy,
 * since a count cannot tell a proxy from a client that reaches the server directly), so n hops is a
 * trust function: the socket's peer and the next n - 1 addresses of X-Forwarded-For are proxies, the
 * address before them is the client's. Like `true`, it is only safe when clients cannot bypass the
 * proxies; a list of the proxies' addresses is safe either way.
 */
export function fastifyTrustProxy(setting: TrustProxy): FastifyTrustProxy {
  if (typeof setting !== "number") return setting;
  return (_address, hop) => hop < setting;
}

function hopCount(raw: string): number {
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new ConfigError(
      `invalid ${VARIABLE}: a number of proxy hops must be at least 1 (false turns it off), got "${raw}"`,
    );
  }
  return n;
}

/**
 * `10.1.2.3`, `::1`, `10.0.0.0/8`, `fd00::/8`: an address, optionally with a prefix length of at
 * least 1 (Fastify refuses `/0`; `true` trusts every address).
 */
function isAddressOrRange(entry: string): boolean {
  const [address = "", prefix, ...rest] = entry.split("/");
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  const bits = Number(prefix);
  return /^\d{1,3}$/.test(prefix) && bits >= 1 && bits <= (family === 4 ? 32 : 128);
}
