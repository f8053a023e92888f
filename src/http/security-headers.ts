/**
 * Security headers on every response (docs/security.md#security-headers):
 *
 * - `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, and no framing
 *   (`X-Frame-Options: DENY` and CSP `frame-ancestors 'none'`: no clickjacking of Stop or Retry);
 * - a Content-Security-Policy per kind of response: a dashboard page (/ and /builds/:id) may run
 *   exactly its own inline style and script (by their SHA-256 hashes, computed from the page at
 *   start-up), the scripts and stylesheets of this origin (/assets/: the shared script and uPlot,
 *   embedded at build time), and talk to this origin; /docs (Swagger UI, served as files) may load from this origin; everything else (JSON,
 *   event streams, metrics) may load nothing at all.
 *
 * Set in an onRequest hook, so that they are on errors too and on the hijacked event streams (which
 * copy the reply's headers).
 */
import { createHash } from "node:crypto";
import type { ApiApp } from "./context.js";

/** The `sha256-...` sources of every inline element with this tag in an HTML page. */
export function inlineHashes(html: string, tag: "script" | "style"): string[] {
  const pattern = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, "g");
  return [...html.matchAll(pattern)].map(
    (match) =>
      `'sha256-${createHash("sha256")
        .update(match[1] ?? "", "utf8")
        .digest("base64")}'`,
  );
}

/**
 * A dashboard page's policy: its own inline style and script, the files of this origin (/assets/),
 * requests to this origin, nothing else. No 'unsafe-inline': uPlot sets styles through the CSSOM
 * (element.style), which a policy does not restrict.
 */
export function dashboardCsp(html: string): string {
  return [
    "default-src 'none'",
    `script-src ${inlineHashes(html, "script").join(" ")} 'self'`,
    `style-src ${inlineHashes(html, "style").join(" ")} 'self'`,
    "connect-src 'self'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

/**
 * Swagger UI: its scripts and styles are files under /docs; it sets inline styles from script (its
 * React components), hence 'unsafe-inline' for styles only.
 */
export const DOCS_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

/** Everything that is not a page: nothing may load, nothing may frame it. */
export const API_CSP = "default-src 'none'; frame-ancestors 'none'";

/** The dashboard's pages, by path: the overview at / and one build at /builds/:id. */
export interface DashboardPages {
  overview: string;
  build: string;
}

export function installSecurityHeaders(app: ApiApp, pages: DashboardPages, docsPrefix: string): void {
  const overview = dashboardCsp(pages.overview);
  const build = dashboardCsp(pages.build);
  app.addHook("onRequest", async (request, reply) => {
    const path = request.url.split("?")[0] ?? "";
    const csp =
      path === "/"
        ? overview
        : /^\/builds\/[^/]+$/.test(path)
          ? build
          : path === docsPrefix || path.startsWith(`${docsPrefix}/`)
            ? DOCS_CSP
            : API_CSP;
    reply.headers({
      "content-security-policy": csp,
      "x-content-type-options": "nosniff",
      "x-frame-options": "DENY",
      "referrer-policy": "no-referrer",
    });
  });
}
