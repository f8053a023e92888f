/**
 * Guards of open mode (no tokens configured: the API trusts whoever reaches it, and listens on
 * loopback only). Two ways a web page the operator opens could still reach it, and what stops them:
 *
 * - DNS rebinding: a page on attacker.example re-points its own name at 127.0.0.1 and then calls
 *   the API as a same-origin page. Its requests carry `Host: attacker.example`, so only loopback
 *   Host values (localhost, 127.0.0.1 and the rest of 127/8, [::1], any port) are answered, plus the
 *   names listed in OCULUS_HTTP_ALLOWED_HOSTS; anything else is 403.
 * - Cross-site requests: a form, or fetch in `no-cors` mode, can POST to loopback from any page
 *   without asking (no CORS preflight) but can only send the "simple" content types. So a
 *   state-changing request (POST, PUT, PATCH, DELETE) must carry `Content-Type: application/json` or
 *   an `X-Oculus-Client` header, both of which a page can only send after a preflight that this API
 *   does not grant to other origins (unless OCULUS_CORS_ORIGINS says so); else 415.
 *
 * With tokens configured neither applies: a page cannot send the Authorization header on its own.
 */
import { isIP } from "node:net";
import { ConfigError, OculusError } from "../core/errors.js";
import { type AuthConfig, type AuthState, authEnabled, currentAuth, isLoopback } from "./auth.js";
import type { ApiApp } from "./context.js";

/** A header a page cannot send cross-origin without a preflight: marks a request as from a client. */
export const CLIENT_HEADER = "x-oculus-client";

const STATE_CHANGING = new Set(["POST", "PUT", "PATCH", "DELETE"]);
const HOSTS_VARIABLE = "OCULUS_HTTP_ALLOWED_HOSTS";
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$/;

/**
 * OCULUS_HTTP_ALLOWED_HOSTS: comma-separated host names or IP addresses (no port, no scheme) that
 * open mode answers to besides the loopback ones; for an open API reached by name on a trusted
 * network through a local proxy. Unset: none.
 */
export function allowedHostsFromEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  const raw = env[HOSTS_VARIABLE]?.trim();
  if (!raw) return [];
  const entries = raw
    .split(",")
    .map((entry) => entry.trim().toLowerCase())
    .filter((entry) => entry.length > 0);
  if (entries.length === 0) throw new ConfigError(`invalid ${HOSTS_VARIABLE}: names no host, got "${raw}"`);
  for (const entry of entries) {
    const bare = entry.replace(/^\[(.*)\]$/, "$1");
    if (isIP(bare) === 0 && !HOST_NAME.test(entry)) {
      throw new ConfigError(
        `invalid ${HOSTS_VARIABLE}: "${entry}" is not a host name or IP address (no scheme, port or path; ` +
          "list each name, no wildcards)",
      );
    }
  }
  return entries.map((entry) => entry.replace(/^\[(.*)\]$/, "$1").replace(/\.$/, ""));
}

/** The host name of a Host header value (`[::1]:8080` -> `::1`, `Localhost.:80` -> `localhost`). */
export function hostNameOf(header: string): string {
  const value = header.trim().toLowerCase();
  const name = value.startsWith("[") ? value.slice(1, value.indexOf("]")) : value.replace(/:\d*$/, "");
  return name.replace(/\.$/, "");
}

function hostAllowed(header: string | undefined, allowed: ReadonlySet<string>): boolean {
  // HTTP/1.0 without Host: no browser sends that, and a name is what rebinding needs.
  if (header === undefined) return true;
  const name = hostNameOf(header);
  return isLoopback(name) || allowed.has(name);
}

function isJson(contentType: string | undefined): boolean {
  const media = contentType?.split(";")[0]?.trim().toLowerCase();
  return (
    media === "application/json" || (media?.startsWith("application/") && media.endsWith("+json")) === true
  );
}

/**
 * Installs both guards as one onRequest hook (after CORS, so a preflight is answered first; before
 * auth, which has nothing to check in open mode). Whether auth is on is asked per request: tokens can
 * be reloaded while the server runs.
 */
export function installOpenModeGuards(
  app: ApiApp,
  authSource: AuthConfig | AuthState,
  allowedHosts: readonly string[] = [],
): void {
  const allowed = new Set(allowedHosts.map((h) => h.toLowerCase()));
  app.addHook("onRequest", async (request) => {
    if (authEnabled(currentAuth(authSource))) return;
    const host = request.headers.host;
    if (!hostAllowed(host, allowed)) {
      throw new OculusError(
        "forbidden",
        403,
        `Host "${hostNameOf(host ?? "")}" is not served: without tokens the API answers only to loopback ` +
          `names (localhost, 127.0.0.1, [::1]) and those in ${HOSTS_VARIABLE}`,
      );
    }
    // An unknown route changes nothing: it keeps its 404.
    if (!STATE_CHANGING.has(request.method) || request.is404) return;
    if (isJson(request.headers["content-type"]) || request.headers[CLIENT_HEADER] !== undefined) return;
    throw new OculusError(
      "invalid_input",
      415,
      `${request.method} needs Content-Type: application/json (send {} when there are no fields) or an ` +
        `${CLIENT_HEADER} header: without tokens, that is what keeps other web pages from sending it`,
    );
  });
}
